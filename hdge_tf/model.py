"""The energy classifier: a backbone's logits read as energies, trained with HDGE.

The loss is HDGE's weighted sum of -log p(y|x) (CE) and the contrastive
-log p(x|y), optionally with the contrastive -log p(x) and JEM's SGLD terms; each
term is one function of `hdge_tf.losses`, and log p(x), log p(x, y) come from
`hdge_tf.energy`. The batch checks live in `hdge_tf.input_checks`, the skipping of
unhealthy steps in `hdge_tf.step_guard`.
"""

from __future__ import annotations

import copy
import math

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import (
    energy,
    hardware,
    input_checks,
    losses,
    norm_statistics,
    sampling,
    step_guard,
)
from hdge_tf.chain_starts import ClassGaussians
from hdge_tf.queue import LogitQueue
from hdge_tf.sgld_settings import FLAT_KEYS, SGLDSettings, moved_argument_error

LOSS_TERMS = ("ce", "pxy_contrast", "px_contrast", "px_sgld", "pxy_sgld", "energy_l2")
# Per-epoch read-outs of the energies: data and samples of each SGLD term
# (training), the top two logits (evaluation); `energy_cap` says why they matter.
SGLD_MONITORS = {
    "px_sgld": ("px_data_energy", "px_sample_energy"),
    "pxy_sgld": ("pxy_data_energy", "pxy_sample_energy"),
}
LOGIT_MONITORS = ("top_logit", "second_logit")
# What a training step reports only when it ran the SGLD terms (`sgld.every`).
_SGLD_REPORTS = frozenset(
    ["energy_l2", "energy_scale", *SGLD_MONITORS, *sum(SGLD_MONITORS.values(), ())]
)
# Stateless random streams of a training step, folded into (seed, step).
(
    _NOISE_STREAM,
    _PX_CHAINS_STREAM,
    _PXY_CHAINS_STREAM,
    _PXY_LABELS_STREAM,  # drawn labels of the log p(x|y) chains (sgld.batch_size)
    _PX_LABELS_STREAM,  # of the log p(x) chains (sgld.px_conditional_chains)
) = range(5)
# A final activation that turns the backbone's outputs into probabilities.
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid", "log_softmax")


@keras.saving.register_keras_serializable(package="hdge_tf")
class HDGEClassifier(keras.Model):
    """Trains any image -> logits backbone with `alpha CE + (1 - alpha) log p(x|y)`.

    `compile(optimizer=...)` + `fit(images, labels)` works as for any Keras model;
    the loss is defined here (do not pass `loss=` to `compile`). The logit queue is
    part of the model's weights, so `.keras` files and checkpoints carry it.

    Args:
      backbone: a Keras model mapping [N, H, W, C] images in [-1, 1] to [N, classes].
      queue_size: K, the number of past inputs contrasted against.
      temperature: τ of the contrastive terms.
      ce_weight, pxy_contrast_weight, px_contrast_weight: weights of the loss terms
        (0 disables a term).
      px_sgld_weight, pxy_sgld_weight: weights of JEM's SGLD maximum-likelihood
        terms for log p(x) and log p(x|y) (`losses.sgld_nll_x`); either > 0 adds a
        `ReplayBuffer` sub-layer `replay_buffer` (class-split when pxy_sgld is on,
        or with `sgld.px_conditional_chains`).
      energy_l2_weight: weight of mean(E_data² + E_sample²) over the SGLD terms;
        without an SGLD term there is nothing to penalize and it is 0. It caps
        the data's labelled logit near `energy_cap`.
      formulation: "reference" (the published code's) or "paper" scoring of the
        contrastive terms, see `hdge_tf.losses`. The default was picked by
        measurement (docs/results.md): "paper" can keep the logits tiny, and p(y|x)
        uncalibrated, at learning rates where "reference" trains well.
      label_smoothing: applied to CE and to the label weights of log p(x|y).
      input_noise_std: std of Gaussian noise added to training inputs (0.03 in JEM).
      queue_init: "random" or "data", see `LogitQueue`.
      sgld: the SGLD chains' `SGLDSettings` (steps, step size, noise, buffer,
        restarts, starts), or a dict of its fields; read only with an SGLD term.
      divergence_threshold: a training step whose loss is non-finite or larger in
        magnitude than this, or whose gradients are non-finite, is not applied
        (weights, optimizer, queue and replay buffer stay as they were) and counts
        in the `skipped_steps` metric; the trainer then restores the last good
        checkpoint (`hdge_tf.training`). JEM's code uses 1e8. Under
        `mixed_float16` loss scaling, non-finite gradients with a finite loss are
        an overflow of the loss scale, not a divergence: the step lowers the scale
        (Keras's `LossScaleOptimizer`), changes nothing else and counts in
        `loss_scale_overflows`.
      seed: every random draw of a training step (input noise, SGLD chains) is a
        stateless function of (seed, optimizer step, replica), so a run resumed
        from a checkpoint draws what an uninterrupted run would have.
      image_shape: (H, W, C) of the images; needed only for a subclassed backbone
        that was never built or called (a functional one states its input shape).

    Loading a saved model needs the classes registered: `import hdge_tf` before
    `keras.saving.load_model("model.keras")`, or Keras reports "Could not locate
    class 'HDGEClassifier'".
    """

    def __init__(
        self,
        backbone: keras.Model,
        queue_size: int = 65536,
        temperature: float = 0.1,
        *,
        ce_weight: float = 1.0,
        pxy_contrast_weight: float = 1.0,
        px_contrast_weight: float = 0.0,
        px_sgld_weight: float = 0.0,
        pxy_sgld_weight: float = 0.0,
        energy_l2_weight: float = 0.0,
        energy_scale_rate: float = 0.0,
        formulation: str = "reference",
        label_smoothing: float = 0.0,
        input_noise_std: float = 0.0,
        queue_init: str = "random",
        sgld: SGLDSettings | dict | None = None,
        divergence_threshold: float = 1e8,
        seed: int = 0,
        image_shape: tuple[int, int, int] | None = None,
        **kwargs,
    ):
        moved = [name for name in FLAT_KEYS if name in kwargs]
        if moved:
            raise moved_argument_error(moved)
        super().__init__(**kwargs)
        _check_logit_backbone(backbone)
        losses.check_formulation(formulation)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if sgld is None:
            sgld = SGLDSettings()
        elif not isinstance(sgld, SGLDSettings):
            sgld = SGLDSettings(**sgld)
        if not divergence_threshold > 0:
            raise ValueError(
                f"divergence_threshold must be positive, got {divergence_threshold}."
            )
        self.backbone = backbone
        self.image_shape = _backbone_image_shape(backbone, image_shape)
        self.num_classes = _backbone_num_classes(backbone, self.image_shape)
        self.temperature = float(temperature)
        sgld_terms_on = px_sgld_weight > 0 or pxy_sgld_weight > 0
        self.loss_weights_ = {
            "ce": float(ce_weight),
            "pxy_contrast": float(pxy_contrast_weight),
            "px_contrast": float(px_contrast_weight),
            "px_sgld": float(px_sgld_weight),
            "pxy_sgld": float(pxy_sgld_weight),
            # Only meaningful next to an SGLD term (it penalizes their energies).
            "energy_l2": float(energy_l2_weight) if sgld_terms_on else 0.0,
        }
        if not 0.0 <= energy_scale_rate < float("inf"):
            raise ValueError(
                f"energy_scale_rate must be finite and >= 0, got {energy_scale_rate}."
            )
        self.energy_scale_rate = float(energy_scale_rate)
        self._log_energy_scale = None
        if self.energy_scale_rate and sgld_terms_on:
            # β = exp(rate * θ), θ trained by the SGLD terms only (CE never sees
            # it); the rate lets one Adam learning rate move β as fast as needed.
            self._log_energy_scale = self.add_weight(
                shape=(), initializer="zeros", name="log_energy_scale"
            )
        self.formulation = formulation
        self.label_smoothing = float(label_smoothing)
        self.input_noise_std = float(input_noise_std)
        self.queue = LogitQueue(
            queue_size, self.num_classes, init=queue_init, name="queue"
        )
        self.sgld = sgld
        self.divergence_threshold = float(divergence_threshold)
        self.seed = int(seed)
        # Only SGLD training has a buffer (and chain starts): old files load as-is.
        self.replay_buffer = self.chain_starts = None
        sgld_terms = [t for t in SGLD_MONITORS if self.loss_weights_[t] > 0]
        self._sgld_term_names = tuple(sgld_terms)
        if sgld_terms:
            self.replay_buffer = sampling.ReplayBuffer(
                sgld.buffer_size,
                self.image_shape,
                self.num_classes if self._class_chains() else None,
                name="replay_buffer",
            )
            if sgld.start == "class_gaussian":
                self.chain_starts = ClassGaussians(
                    self.num_classes,
                    self.image_shape,
                    uniform_fraction=sgld.start_uniform_fraction,
                    name="chain_starts",
                )
        # CE is always tracked (it is the NLL), contrastive terms only when used.
        self._reported_terms = [
            t for t in LOSS_TERMS if t == "ce" or self.loss_weights_[t] > 0
        ]
        monitors = [m for t in sgld_terms for m in SGLD_MONITORS[t]]
        if self._log_energy_scale is not None:
            monitors.append("energy_scale")
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ["loss", *self._reported_terms, *monitors, *LOGIT_MONITORS]
        }
        self._accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self._skipped = keras.metrics.Sum(name="skipped_steps")
        self._overflows = keras.metrics.Sum(name="loss_scale_overflows")
        self.step_jit_compile = False  # set by compile()
        self.built = True

    # Inference ------------------------------------------------------------------

    def call(self, images, training=False):
        """Returns float32 logits, [N, classes]."""
        shape = getattr(images, "shape", None)  # static: no cost per call
        if shape is not None and getattr(shape, "rank", 0) is not None:
            input_checks.check_image_shape(tuple(shape), self.image_shape)
        return energy.logits(self.backbone, images, training)

    # Training -------------------------------------------------------------------

    def _class_chains(self) -> bool:
        """Whether any SGLD chain samples p(x|y) (then the buffer is class-split)."""
        return self.loss_weights_["pxy_sgld"] > 0 or (
            self.loss_weights_["px_sgld"] > 0 and self.sgld.px_conditional_chains
        )

    @property
    def _batch_norms(self) -> list:
        # Found anew on each use: a list attribute would be tracked (and saved).
        return norm_statistics.batch_norm_layers(self.backbone)

    @property
    def sgld_pass_mode(self) -> str:
        """`SGLDSettings.pass_mode` resolved for this backbone: the modes differ
        only in how BatchNorm is treated, so without it every mode is JEM's
        ("training", the classification pass's logits reused); "auto" is
        "sample_batch" with it."""
        if not self._batch_norms:
            return "training"
        return "sample_batch" if self.sgld.pass_mode == "auto" else self.sgld.pass_mode

    @property
    def energy_scale(self) -> tf.Tensor | None:
        """β of the generative energy E(x) = -β·logsumexp f(x), or None for β = 1.

        A learned β lets the SGLD terms set how sharp the density is while CE
        alone sets the logits' scale: rescaling f by c and β by 1/c leaves the
        density, its samples and the SGLD terms unchanged, so they no longer pull
        p(y|x) toward under-confidence. p(y|x) stays softmax(f).
        """
        if self._log_energy_scale is None:
            return None
        return tf.exp(self.energy_scale_rate * self._log_energy_scale)

    @property
    def energy_cap(self) -> float:
        """Where the energy L2 penalty holds the data's labelled logit: inf without it.

        A data term's gradient pulls log p̃(x) up with weight w (the SGLD terms'
        weights) and CE pushes f_y up by α(1 - p_y); λ·E² pulls it back by 2λE. They
        balance at f_y ≈ (w + α(1 - p_y)) / (2λ) <= (w + α) / (2λ): a model whose
        confident logits need more than that stays under-confident. A learned
        energy scale moves the cap onto β·f_y, so f_y itself has none.
        """
        weight = self.loss_weights_["px_sgld"] + self.loss_weights_["pxy_sgld"]
        penalty = self.loss_weights_["energy_l2"]
        if not penalty or self._log_energy_scale is not None:
            return float("inf")
        return (weight + self.loss_weights_["ce"]) / (2.0 * penalty)

    @property
    def settled_confidence(self) -> float:
        """p(y|x) where the energy penalty settles a right example once the SGLD
        samples look like the data (1 without the penalty).

        Then a data term and the sample term beside it cancel, and only CE's
        α(1 - p) pushes the labelled logit against the penalty's 2λf: f settles
        at α(1 - p) / (2λ) with p = 1 / (1 + (C - 1) e^-f) (the other logits near
        0), far below `energy_cap`. Solved by bisection on f. A bound, not a
        forecast: the log p(x|y) term's samples also pull f_y down near the data
        (docs/hdge_jem.md measured ECE 0.04 where this says 0.993).
        """
        penalty = self.loss_weights_["energy_l2"]
        if not penalty or self._log_energy_scale is not None:
            return 1.0
        rest = self.num_classes - 1
        low, high = 0.0, self.energy_cap
        for _ in range(60):
            logit = (low + high) / 2
            confidence = 1.0 / (1.0 + rest * math.exp(-logit))
            if self.loss_weights_["ce"] * (1 - confidence) > 2 * penalty * logit:
                low = logit
            else:
                high = logit
        return 1.0 / (1.0 + rest * math.exp(-low))

    def fit_chain_starts(self, images, labels) -> None:
        """Fits the class Gaussians of `sgld.start="class_gaussian"` to training
        images ([N, H, W, C], labels [N]) and refills the replay buffer from them,
        so the first chains already start there. Call once before training."""
        if self.chain_starts is None:
            raise ValueError(
                "fit_chain_starts needs sgld.start='class_gaussian' and an SGLD term "
                f"(px_sgld_weight or pxy_sgld_weight > 0); this model has "
                f"sgld.start={self.sgld.start!r}."
            )
        self.chain_starts.fit(images, labels)
        buffer = self.replay_buffer
        if buffer.num_classes is not None:  # slice c holds class c's chains
            labels = tf.repeat(tf.range(self.num_classes), buffer.class_size)
        else:
            labels = sampling.uniform_noise([buffer.size], [self.seed, 1])
            labels = tf.cast(labels * self.num_classes, tf.int32)
        buffer.images.assign(self.chain_starts.sample(labels, [self.seed, 2]))

    def fit(self, x=None, *args, **kwargs):
        if self.chain_starts is not None and not self.chain_starts.fitted:
            raise ValueError(
                "sgld.start='class_gaussian' needs its class Gaussians: call "
                "model.fit_chain_starts(train_images, train_labels) before fit()."
            )
        input_checks.check_range_once(self, x, kwargs.get("batch_size"))
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        input_checks.check_range_once(self, x, kwargs.get("batch_size"))
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        # Before Keras wraps call()'s error in its own multi-line message.
        if isinstance(x, np.ndarray | tf.Tensor):
            input_checks.check_image_shape(x.shape, self.image_shape)
        return super().predict(x, *args, **kwargs)

    def compile(self, optimizer="adam", jit_compile="auto", **kwargs):
        """Keras's compile; `jit_compile` ("auto", True, False or "true"/"false",
        see `hardware.resolve_jit_compile`: "auto" is on with a GPU) XLA-compiles
        the heavy part of every training step (`step_jit_compile`).

        XLA here is the model's, not Keras's: Keras's own jit_compile (one XLA
        function around `strategy.run(train_step)`) stays off, because in Keras
        3.15 "auto" turns it off under any tf.distribute strategy, and an explicit
        True under a two-replica MirroredStrategy fails ("Trying to access
        resource .../replica_1 located in device CPU:1 from device CPU:0": one XLA
        cluster cannot span the replicas' devices); and because XLA drops Assert
        ops, i.e. the input checks. `train_step` instead runs `_forward_backward`
        (SGLD chains, forward and backward passes) as a `jit_compile=True`
        function inside each replica, with the checks, the optimizer update,
        queue and buffer writes and the cross-replica merges outside it.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "HDGEClassifier defines its own loss (weighted CE and contrastive "
                "terms); call compile() without `loss=`."
            )
        jit = hardware.resolve_jit_compile(jit_compile)
        if jit and kwargs.get("run_eagerly"):
            raise ValueError("jit_compile=True cannot be combined with run_eagerly.")
        super().compile(optimizer=optimizer, jit_compile=False, **kwargs)
        self.step_jit_compile = jit
        # Build now so a first step that fails on bad input cannot leave the
        # optimizer half-built inside a traced function.
        self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        # Keras skips custom compile() methods when loading; ours is safe to call.
        config = keras.saving.deserialize_keras_object(config)
        # Keras's own flag, always False here; a loaded model decides XLA anew.
        config.pop("jit_compile", None)
        self.compile(**config)

    @property
    def metrics(self):
        metrics = [*self._trackers.values(), self._accuracy, self._skipped]
        return metrics + ([self._overflows] if self._loss_scaling() else [])

    def _loss_scaling(self) -> bool:
        return step_guard.scales_loss(getattr(self, "optimizer", None))

    def step_seed(self, stream: int) -> tf.Tensor:
        """An int64 [2] stateless seed for one random stream of the current
        training step: a function of (seed, optimizer step, replica, stream)."""
        seed = tf.stack(
            [
                tf.constant(self.seed, tf.int64),
                tf.cast(self.optimizer.iterations, tf.int64),
            ]
        )
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = sampling.fold_in(
                seed, tf.cast(replica.replica_id_in_sync_group, tf.int64)
            )
        return sampling.fold_in(seed, stream)

    def loss_terms(self, logits: tf.Tensor, labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """Batch means of every loss term, against the current queue contents."""
        queue, valid = self.queue.logits, self.queue.valid_mask()
        terms = {"ce": losses.cross_entropy(labels, logits, self.label_smoothing)}
        if self.loss_weights_["pxy_contrast"]:
            terms["pxy_contrast"] = losses.contrastive_nll_x_given_y(
                logits,
                labels,
                queue,
                self.temperature,
                self.formulation,
                self.label_smoothing,
                valid,
            )
        if self.loss_weights_["px_contrast"]:
            terms["px_contrast"] = losses.contrastive_nll_x(
                logits, queue, self.temperature, valid
            )
        return {name: tf.reduce_mean(value) for name, value in terms.items()}

    def total_loss(self, terms: dict[str, tf.Tensor]) -> tf.Tensor:
        """The weighted sum of the loss terms in `terms` (monitors are skipped);
        the SGLD terms and their penalty count `sgld.every` times, as they run on
        one step in that many."""
        total = tf.add_n(
            [self._term_weight(n) * v for n, v in terms.items() if n in LOSS_TERMS]
        )
        if self.losses:  # regularizers of the backbone
            total += tf.add_n([tf.cast(v, tf.float32) for v in self.losses])
        return total

    def _term_weight(self, name: str) -> float:
        weight = self.loss_weights_[name]
        return weight * self.sgld.every if name in _SGLD_REPORTS else weight

    def _sgld_chains(self, num_chains, labels=None, stream=_PXY_CHAINS_STREAM):
        """(samples, buffer indices, labels) of `num_chains` chains; with `labels`
        they sample p(x|y) for those labels. Runs outside the gradient tape with
        the network in inference mode; the compiled chain works in float32."""
        seed = self.step_seed(_PX_CHAINS_STREAM if labels is None else stream)
        fresh = None
        if self.chain_starts is not None:
            start_labels = labels
            if labels is None:  # p(x) chains restart from a random class's Gaussian
                draw = sampling.uniform_noise([num_chains], sampling.fold_in(seed, 3))
                start_labels = tf.cast(draw * self.num_classes, tf.int32)
            fresh = self.chain_starts.sample(start_labels, sampling.fold_in(seed, 2))
        starts, indices = self.replay_buffer.sample(
            num_chains,
            labels=labels,
            reinit_freq=self.sgld.reinit_freq,
            seed=sampling.fold_in(seed, 0),
            fresh=fresh,
        )
        samples = sampling.sgld_chain(
            self,
            starts,
            tf.constant(self.sgld.steps, tf.int32),
            tf.constant(self.sgld.step_size, tf.float32),
            tf.constant(self.sgld.noise_std, tf.float32),
            sampling.fold_in(seed, 1),
            labels,
            sampling.data_range() if self.sgld.clip else None,
        )
        return tf.stop_gradient(samples), indices, labels

    def _num_chains(self, batch: tf.Tensor):
        """Chains per step on this replica: `sgld.batch_size` split over the
        replicas, else one per image of `batch`."""
        if not self.sgld.batch_size:
            return tf.shape(batch)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return tf.constant(-(-self.sgld.batch_size // replicas), tf.int32)

    def _chain_labels(self, labels: tf.Tensor) -> tf.Tensor:
        """Labels of the log p(x|y) chains: the batch's, or with `sgld.batch_size`
        uniformly drawn ones (HDGE's code draws them the same way)."""
        if not self.sgld.batch_size:
            return labels
        return self._random_labels(self._num_chains(labels), _PXY_LABELS_STREAM)

    def _random_labels(self, num, stream: int) -> tf.Tensor:
        """`num` class labels drawn uniformly from this step's stream `stream`."""
        draw = sampling.uniform_noise([num], self.step_seed(stream))
        return tf.cast(draw * self.num_classes, tf.int32)

    def sgld_terms(
        self, logits, labels, chains, px_logits=None, training=True, sample_logits=None
    ) -> dict[str, tf.Tensor]:
        """JEM's SGLD terms (and the energy L2 penalty) given the data batch's
        logits and `chains`: {"px_sgld"/"pxy_sgld": (samples, _, chain labels)}.
        `px_logits`: logits of the images log p(x) is fitted to, if not
        `logits`'; `training`: the mode the samples are scored in, that of the
        data's logits; `sample_logits`: {term: logits} already computed. Also
        returns the mean energies (`SGLD_MONITORS`)."""
        terms, penalty = {}, []
        scale = self.energy_scale
        for name, (samples, _, chain_labels) in chains.items():
            if sample_logits is not None and name in sample_logits:
                logits_of_samples = sample_logits[name]
            else:
                logits_of_samples = self(samples, training=training)
            if name == "px_sgld":
                data_logits = logits if px_logits is None else px_logits
                data_density = energy.log_px(data_logits)
                sample_density = energy.log_px(logits_of_samples)
            else:  # log p(x, y): the batch's labels, the chains' own
                data_density = energy.log_pxy(logits, labels)
                sample_density = energy.log_pxy(logits_of_samples, chain_labels)
            if scale is not None:
                data_density *= scale
                sample_density *= scale
            terms[name] = losses.sgld_nll_x(data_density, sample_density)
            penalty.append(losses.energy_l2(data_density, sample_density))
            data_monitor, sample_monitor = SGLD_MONITORS[name]
            terms[data_monitor] = -tf.reduce_mean(tf.stop_gradient(data_density))
            terms[sample_monitor] = -tf.reduce_mean(tf.stop_gradient(sample_density))
        if self.loss_weights_["energy_l2"]:
            terms["energy_l2"] = tf.add_n(penalty)
        if scale is not None:
            terms["energy_scale"] = tf.stop_gradient(scale)
        return terms

    def train_step(self, data):
        """One step on (images, labels), or for semi-supervised training on
        ({"images": labeled images, "unlabeled": images}, labels): CE and the
        contrastive terms see the labeled batch, the SGLD log p(x) term the
        unlabeled one (JEM's `labels_per_class` setting)."""
        images, labels, unlabeled = input_checks.unpack_batch(
            data, self.image_shape, self.num_classes
        )
        images = self.queue.check_batch_size(images)
        forward_backward = self._forward_backward
        if self.step_jit_compile:
            # A new function per trace of the step (one per replica), so that no
            # tf.function hangs on the model where checkpoints would track it.
            forward_backward = tf.function(forward_backward, jit_compile=True)
        loss, terms, grads, logits, chains, sgld_ran = forward_backward(
            images, labels, unlabeled
        )
        step = step_guard.apply_if_healthy(
            self.optimizer,
            grads,
            self.trainable_variables,
            loss,
            self.divergence_threshold,
        )
        # The batch joins the queue after the loss used the older entries.
        self.queue.enqueue(logits, keep=step.applied)
        for samples, indices in chains.values():
            self.replay_buffer.write(
                indices, samples, keep=tf.logical_and(step.applied, sgld_ran)
            )
        return self._update_metrics(loss, terms, labels, logits, step, sgld_ran)

    def _forward_backward(self, images, labels, unlabeled=None):
        """The computation of a training step on checked inputs, without side
        effects other than layer state (e.g. BatchNorm statistics): input noise,
        SGLD chains, the loss and its gradients. Returns (loss, terms, gradients,
        logits, chains {term: (samples, buffer indices)}, whether the SGLD terms
        ran); XLA-compiled when `step_jit_compile`.

        With `sgld.every` > 1 a `tf.cond` on the step counter runs the SGLD terms
        on one step in `every`; the other steps cost what an HDGE step costs."""
        images = self._add_input_noise(images)
        if unlabeled is not None:
            unlabeled = self._add_input_noise(unlabeled, stream=1)
        sgld_on = bool(self._sgld_term_names)
        if not sgld_on or self.sgld.every == 1:
            outputs = self._losses_and_gradients(images, labels, unlabeled, sgld_on)
            return (*outputs, tf.constant(sgld_on))
        # optimizer.iterations is the same on every replica: one decision.
        ran = tf.equal(self.optimizer.iterations % self.sgld.every, 0)
        outputs = tf.cond(
            ran,
            lambda: self._losses_and_gradients(images, labels, unlabeled, True),
            lambda: self._losses_and_gradients(images, labels, unlabeled, False),
        )
        return (*outputs, ran)

    def _losses_and_gradients(self, images, labels, unlabeled, sgld: bool):
        """(loss, terms, gradients, logits, chains) of noisy inputs, with the SGLD
        terms when `sgld`, else with zeros in their place (same structure, for
        `tf.cond`)."""
        px_data = images if unlabeled is None else unlabeled
        chains = {}
        if sgld and self.loss_weights_["px_sgld"] > 0:
            num_chains = self._num_chains(px_data)
            px_labels = None
            if self.sgld.px_conditional_chains:
                px_labels = self._random_labels(num_chains, _PX_LABELS_STREAM)
            chains["px_sgld"] = self._sgld_chains(
                num_chains, px_labels, _PX_CHAINS_STREAM
            )
        if sgld and self.loss_weights_["pxy_sgld"] > 0:
            chain_labels = self._chain_labels(labels)
            chains["pxy_sgld"] = self._sgld_chains(
                tf.shape(chain_labels)[0], chain_labels
            )
        mode = self.sgld_pass_mode if chains else "training"
        with tf.GradientTape() as tape:
            if mode == "data_batch" and self._batch_norms:
                logits, sample_logits = self._joint_pass(images, chains)
            else:
                logits, sample_logits = self(images, training=True), None
            terms = self.loss_terms(logits, labels)
            if chains:
                passes = (mode, images, logits, labels, chains, unlabeled)
                terms.update(self._sgld_passes(*passes, sample_logits))
            if not chains and self._sgld_term_names:
                terms.update(self._skipped_sgld_terms())
            loss = self.total_loss(terms)
            scaled = self.optimizer.scale_loss(loss)  # identity unless mixed_float16
            # Replica gradients are summed; scale so they average the global batch.
            scaled /= tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, self.trainable_variables)
        if not self._sgld_term_names or sgld:
            return loss, terms, grads, logits, {n: c[:2] for n, c in chains.items()}
        # A skipping step: shapes as the other branch's, for tf.cond. θ gets a zero
        # gradient, and the chains' rows are written nowhere.
        grads = [
            tf.zeros_like(v) if g is None and v is self._log_energy_scale else g
            for g, v in zip(grads, self.trainable_variables, strict=True)
        ]
        chains = {
            name: self._no_chains(px_data if name == "px_sgld" else images)
            for name in self._sgld_term_names
        }
        return loss, terms, grads, logits, chains

    def _joint_pass(self, images, chains):
        """(data logits, {term: sample logits}) of one training-mode pass over
        the data batch and every chain's samples, BatchNorm normalizing all of
        them with the data rows' statistics (which alone move the running
        ones): `sgld_pass_mode` "data_batch"."""
        rows = tf.shape(images)[0]
        samples = [chains[name][0] for name in chains]
        with norm_statistics.statistics_of_first_rows(self._batch_norms, rows):
            joint = self(tf.concat([images, *samples], 0), training=True)
        sizes = [rows, *(tf.shape(s)[0] for s in samples)]
        logits, *parts = tf.split(joint, tf.stack(sizes), axis=0)
        return logits, dict(zip(chains, parts, strict=True))

    def _sgld_passes(
        self, mode, images, logits, labels, chains, unlabeled, sample_logits=None
    ):
        """`sgld_terms` with the network passes of `mode` (`sgld_pass_mode`);
        samples never mix into the data batch's statistics (as in JEM's code):
        they get their own pass, or share the data's statistics
        (`sample_logits` of `_joint_pass`)."""
        samples_training = mode in ("training", "sample_batch")
        data_logits = logits
        if mode == "inference":
            data_logits = self(images, training=False)
        px_logits = None
        if unlabeled is not None and "px_sgld" in chains:
            px_logits = self(unlabeled, training=mode == "training")
        kept = None
        if mode == "sample_batch" and self._batch_norms:
            kept = norm_statistics.read(self._batch_norms)
        terms = self.sgld_terms(
            data_logits, labels, chains, px_logits, samples_training, sample_logits
        )
        if kept is not None:  # the samples' batch leaves no trace
            norm_statistics.restore(self._batch_norms, kept)
        return terms

    def _skipped_sgld_terms(self) -> dict[str, tf.Tensor]:
        """Zeros for what `sgld_terms` returns, on a step that skips them."""
        names = [n for t in self._sgld_term_names for n in (t, *SGLD_MONITORS[t])]
        if self.loss_weights_["energy_l2"]:
            names.append("energy_l2")
        terms = {name: tf.constant(0.0) for name in names}
        if self._log_energy_scale is not None:
            terms["energy_scale"] = tf.stop_gradient(self.energy_scale)
        return terms

    def _no_chains(self, batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(samples, indices) shaped as a step's chains, written nowhere."""
        num = self._num_chains(batch)
        shape = tf.concat([[num], self.replay_buffer.image_shape], 0)
        return tf.zeros(shape), tf.zeros([num], tf.int32)

    def _add_input_noise(self, images: tf.Tensor, stream: int = 0) -> tf.Tensor:
        if not self.input_noise_std:
            return images
        seed = sampling.fold_in(self.step_seed(_NOISE_STREAM), stream)
        # The same draws inside and outside XLA (`sampling.normal_noise`).
        noise = sampling.normal_noise(tf.shape(images), seed)
        return images + self.input_noise_std * tf.cast(noise, images.dtype)

    def test_step(self, data):
        images, labels, _ = input_checks.unpack_batch(
            data, self.image_shape, self.num_classes
        )
        logits = self(images, training=False)
        terms = self.loss_terms(logits, labels)
        return self._update_metrics(self.total_loss(terms), terms, labels, logits)

    def _update_metrics(
        self,
        loss,
        terms,
        labels,
        logits,
        step: step_guard.StepOutcome | None = None,
        sgld_ran=True,
    ) -> dict[str, tf.Tensor]:
        """Updates and returns the metrics of the terms computed (evaluation runs no
        SGLD chains, so its loss and metrics leave the SGLD terms out).

        A training `step` that was not applied leaves the other metrics as they
        were; it counts in `skipped_steps` when it diverged, in
        `loss_scale_overflows` when the loss scale overflowed. A step that skipped
        the SGLD terms (`sgld_ran` False) leaves their metrics as they were.
        """
        training = step is not None
        healthy = tf.constant(True) if step is None else step.applied
        weight = tf.cast(healthy, tf.float32)

        def kept(value):  # a zero weight alone would still let NaN through
            return tf.where(healthy, value, tf.zeros_like(value))

        # The energy monitor's logits, in training too: a training step must
        # return every metric, or Keras logs one replica's values instead of
        # the metrics' cross-replica results.
        top_two = tf.math.top_k(logits, k=min(2, self.num_classes)).values
        terms = dict(terms)
        for index, name in enumerate(LOGIT_MONITORS[: top_two.shape[-1]]):
            terms[name] = tf.reduce_mean(top_two[:, index])

        self._trackers["loss"].update_state(kept(loss), weight)
        reported = [n for n in self._trackers if n != "loss" and n in terms]
        sgld_weight = weight * tf.cast(sgld_ran, tf.float32)
        for name in reported:
            self._trackers[name].update_state(
                kept(terms[name]), sgld_weight if name in _SGLD_REPORTS else weight
            )
        self._accuracy.update_state(
            labels, kept(logits), tf.fill(tf.shape(labels), weight)
        )
        updated = [*(self._trackers[n] for n in ("loss", *reported)), self._accuracy]
        if training:
            # Every replica counts the (shared) decision; metric sums add replicas.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            diverged = 1.0 - tf.cast(step.converged, tf.float32)
            self._skipped.update_state(diverged / replicas)
            updated.append(self._skipped)
            if self._loss_scaling():
                overflow = tf.cast(step.overflow, tf.float32)
                self._overflows.update_state(overflow / replicas)
                updated.append(self._overflows)
        return {m.name: m.result() for m in updated}

    # Serialization --------------------------------------------------------------

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            queue_size=self.queue.size,
            temperature=self.temperature,
            ce_weight=self.loss_weights_["ce"],
            pxy_contrast_weight=self.loss_weights_["pxy_contrast"],
            px_contrast_weight=self.loss_weights_["px_contrast"],
            px_sgld_weight=self.loss_weights_["px_sgld"],
            pxy_sgld_weight=self.loss_weights_["pxy_sgld"],
            energy_l2_weight=self.loss_weights_["energy_l2"],
            energy_scale_rate=self.energy_scale_rate,
            formulation=self.formulation,
            label_smoothing=self.label_smoothing,
            input_noise_std=self.input_noise_std,
            queue_init=self.queue.init,
            sgld=keras.saving.serialize_keras_object(self.sgld),
            divergence_threshold=self.divergence_threshold,
            seed=self.seed,
            image_shape=self.image_shape,
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        """Also reads the flat SGLD keys (`sgld_settings.FLAT_KEYS`) of models
        saved before the settings were one object, defaults for those missing."""
        config = copy.deepcopy(config)  # deserializing consumes the nested dict
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        flat = {k: config.pop(k) for k in FLAT_KEYS if k in config}
        if "sgld" in config:
            if flat:
                raise ValueError(
                    f"HDGEClassifier config has both 'sgld' and the flat keys "
                    f"{sorted(flat)}; expected one of the two."
                )
            config["sgld"] = keras.saving.deserialize_keras_object(config["sgld"])
        else:
            config["sgld"] = SGLDSettings.from_flat(flat)
        return cls(**config)

    def export(self, filepath, format="tf_saved_model", input_signature=None, **kw):
        """Keras's `Model.export`, for float32 images [batch, H, W, C] unless told
        otherwise: this model is built in __init__, not by a first call, so Keras
        has no call to infer the signature from."""
        if input_signature is None:
            input_signature = [
                keras.InputSpec(shape=(None, *self.image_shape), dtype="float32")
            ]
        return super().export(
            filepath, format=format, input_signature=input_signature, **kw
        )


def model_image_shape(model: keras.Model) -> tuple[int, int, int]:
    """(H, W, C) of the images `model` takes: an HDGEClassifier's `image_shape`,
    else a Keras model's input shape (a plain classifier loaded for evaluation)."""
    shape = getattr(model, "image_shape", None) or model.input_shape[1:]
    return tuple(int(d) for d in shape)


def _backbone_image_shape(backbone: keras.Model, image_shape) -> tuple:
    """(H, W, C) of the backbone's images: `image_shape` if given, else its input
    shape (functional, Sequential), else the shape it was built with or first
    called on (a subclassed model); an error saying what to pass otherwise."""
    if image_shape is None:
        try:
            image_shape = backbone.input_shape[1:]
        except (AttributeError, ValueError):
            # Keras records the shape a subclassed model was built or called with.
            shapes = list(
                (getattr(backbone, "_build_shapes_dict", None) or {}).values()
            )
            if len(shapes) != 1 or len(shapes[0]) != 4:
                raise ValueError(
                    f"HDGEClassifier cannot tell which images the backbone "
                    f"{backbone.name!r} takes (a subclassed model that was never "
                    "built or called): pass image_shape=(height, width, channels), "
                    "or call the backbone on a batch of images first."
                ) from None
            image_shape = shapes[0][1:]
    image_shape = tuple(None if d is None else int(d) for d in image_shape)
    if len(image_shape) != 3:
        raise ValueError(
            f"image_shape must be (height, width, channels), got {image_shape}."
        )
    return image_shape


def _backbone_num_classes(backbone: keras.Model, image_shape: tuple) -> int:
    """The backbone's logit count, at least two; an unbuilt (subclassed) backbone
    is built by calling it on one image of `image_shape`, as Keras builds on a
    first call."""
    try:
        count = int(backbone.output_shape[-1])
    except (AttributeError, ValueError, TypeError):
        if any(d is None for d in image_shape):
            raise ValueError(
                "Pass the full image_shape for the subclassed backbone "
                f"{backbone.name!r}; got {image_shape}."
            ) from None
        count = int(backbone(keras.ops.zeros((1, *image_shape))).shape[-1])
    if count < 2:
        # softmax of one logit is 1 whatever the input: CE, the contrastive
        # terms and p(y|x) would learn nothing.
        raise ValueError(
            f"The backbone {backbone.name!r} has {count} logit(s); HDGEClassifier "
            "needs one per class, at least 2 (a binary task: Dense(2), not Dense(1) "
            "with a sigmoid)."
        )
    return count


def _check_logit_backbone(backbone: keras.Model) -> None:
    """Rejects a backbone whose last layer turns logits into probabilities: its
    outputs would be read as energies, and every log p(x) would be meaningless."""
    last = backbone.layers[-1] if getattr(backbone, "layers", None) else None
    if isinstance(last, keras.layers.Softmax):
        activation = "softmax"
    else:
        activation = getattr(getattr(last, "activation", None), "__name__", "")
    if activation in _PROBABILITY_ACTIVATIONS:
        raise ValueError(
            f"The backbone's last layer {last.name!r} applies {activation}: "
            "HDGEClassifier needs raw logits, which it reads as energies "
            "(log p(x) = logsumexp of the logits). Remove the final activation "
            "(e.g. Dense(classes) without activation='softmax')."
        )
