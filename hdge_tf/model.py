"""The energy classifier: a backbone's logits read as energies, trained with HDGE.

The loss is HDGE's weighted sum (`LossWeights`) of -log p(y|x) (CE) and the
contrastive -log p(x|y), optionally with the contrastive -log p(x) and JEM's SGLD
terms; each term is one function of `hdge_tf.losses`, and log p(x), log p(x, y)
come from `hdge_tf.energy`. This module is the classifier with its train_step,
test_step and loss assembly; the SGLD terms' chains, starts and passes are
`hdge_tf.jem_terms`', the batch checks `hdge_tf.input_checks`', the skipping of
unhealthy steps `hdge_tf.step_guard`'s.
"""

from __future__ import annotations

import copy
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import (
    array_inputs,
    energy,
    hardware,
    input_checks,
    jem_terms,
    losses,
    sampling,
    sgld_settings,
    step_guard,
)
from hdge_tf import loss_weights as loss_weights_lib
from hdge_tf.jem_terms import SGLD_REPORTS, JEMTerms
from hdge_tf.loss_weights import LossWeights
from hdge_tf.queue import LogitQueue
from hdge_tf.sgld_settings import SGLDSettings

LOSS_TERMS = loss_weights_lib.TERMS
# Per-epoch read-outs of the top two logits (evaluation too); the SGLD terms'
# energies are `jem_terms.SGLD_MONITORS`.
LOGIT_MONITORS = ("top_logit", "second_logit")
# The input noise's stateless random stream of a training step (`step_seed`);
# streams 1-4 are the SGLD chains' (`jem_terms`).
_NOISE_STREAM = 0
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
      loss_weights: the loss terms' `LossWeights` (0 disables a term), or a dict
        of its fields; default CE and the contrastive log p(x|y) at 1. An SGLD
        term (px_sgld or pxy_sgld > 0) adds a `ReplayBuffer` sub-layer
        `replay_buffer` (class-split when pxy_sgld is on, or with
        `sgld.px_conditional_chains`) and runs JEM's chains (`jem`, a
        `jem_terms.JEMTerms`). Without an SGLD term energy_l2 has nothing to
        penalize and is 0; with one it caps the data's labelled logit
        (`energy_penalty.energy_cap`). The flat keyword arguments `ce_weight`,
        `pxy_contrast_weight`, `px_contrast_weight`, `px_sgld_weight`,
        `pxy_sgld_weight` and `energy_l2_weight` (the trainer's `loss.*` keys,
        `loss_weights.FLAT_KEYS`) are still taken instead, for the weights they
        name.
      energy_scale_rate: > 0 learns a scale β of the generative energy
        (`energy_scale`) at this rate, with an SGLD term.
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
        loss_weights: LossWeights | dict | None = None,
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
        moved = [name for name in sgld_settings.FLAT_KEYS if name in kwargs]
        if moved:
            raise sgld_settings.moved_argument_error(moved)
        kwargs, flat_weights = loss_weights_lib.split_flat(kwargs)
        if flat_weights is not None:
            if loss_weights is not None:
                raise TypeError(
                    "HDGEClassifier takes loss_weights=hdge_tf.LossWeights(...) or "
                    "the flat *_weight arguments, not both."
                )
            loss_weights = flat_weights
        super().__init__(**kwargs)
        _check_logit_backbone(backbone)
        losses.check_formulation(formulation)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if loss_weights is None:
            loss_weights = LossWeights()
        elif not isinstance(loss_weights, LossWeights):
            loss_weights = LossWeights(**loss_weights)
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
        sgld_terms_on = loss_weights.sgld_on
        if not sgld_terms_on:  # the penalty is on the SGLD terms' energies
            loss_weights = dataclasses.replace(loss_weights, energy_l2=0.0)
        self.loss_weights = loss_weights
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
        # Only SGLD training has a buffer (and chain starts): old files load as-is;
        # `jem` (not a layer: nothing of it is saved) runs the SGLD terms.
        self.replay_buffer, self.chain_starts = jem_terms.chain_state(
            loss_weights, sgld, self.num_classes, self.image_shape
        )
        self.jem = JEMTerms(self)
        # CE is always tracked (it is the NLL), the other terms only when used.
        self._reported_terms = [
            t for t in LOSS_TERMS if t == "ce" or loss_weights[t] > 0
        ]
        monitors = self.jem.monitors()
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
        self.jem.fit_starts(images, labels)

    def fit(self, x=None, *args, **kwargs):
        if self.chain_starts is not None and not self.chain_starts.fitted:
            raise ValueError(
                "sgld.start='class_gaussian' needs its class Gaussians: call "
                "model.fit_chain_starts(train_images, train_labels) before fit()."
            )
        input_checks.check_range_once(self, x, kwargs.get("batch_size"))
        # Arrays through a pipeline without autotuning (hdge_tf/array_inputs.py).
        arguments = array_inputs.fit_arguments(self, (x, *args), kwargs)
        if arguments is not None:
            return super().fit(**arguments)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        input_checks.check_range_once(self, x, kwargs.get("batch_size"))
        arguments = array_inputs.evaluate_arguments(self, (x, *args), kwargs)
        if arguments is not None:
            return super().evaluate(**arguments)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        # Before Keras wraps call()'s error in its own multi-line message.
        if isinstance(x, np.ndarray | tf.Tensor):
            input_checks.check_image_shape(x.shape, self.image_shape)
        arguments = array_inputs.predict_arguments(self, (x, *args), kwargs)
        if arguments is not None:
            return super().predict(**arguments)
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
        if self.loss_weights["pxy_contrast"]:
            terms["pxy_contrast"] = losses.contrastive_nll_x_given_y(
                logits,
                labels,
                queue,
                self.temperature,
                self.formulation,
                self.label_smoothing,
                valid,
            )
        if self.loss_weights["px_contrast"]:
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
        weight = self.loss_weights[name]
        return weight * self.sgld.every if name in SGLD_REPORTS else weight

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
        sgld_on = bool(self.jem.names)
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
        jem = self.jem
        chains = jem.draw_chains(images, labels, unlabeled) if sgld else {}
        mode = jem.pass_mode if chains else "training"
        with tf.GradientTape() as tape:
            if mode == "data_batch" and jem.batch_norms:
                logits, sample_logits = jem.joint_pass(images, chains)
            else:
                logits, sample_logits = self(images, training=True), None
            terms = self.loss_terms(logits, labels)
            if chains:
                passes = (mode, images, logits, labels, chains, unlabeled)
                terms.update(jem.passes(*passes, sample_logits))
            if not chains and jem.names:
                terms.update(jem.skipped_terms())
            loss = self.total_loss(terms)
            scaled = self.optimizer.scale_loss(loss)  # identity unless mixed_float16
            # Replica gradients are summed; scale so they average the global batch.
            scaled /= tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, self.trainable_variables)
        if not jem.names or sgld:
            return loss, terms, grads, logits, {n: c[:2] for n, c in chains.items()}
        # A skipping step: shapes as the other branch's, for tf.cond. θ gets a zero
        # gradient, and the chains' rows are written nowhere.
        grads = [
            tf.zeros_like(v) if g is None and v is self._log_energy_scale else g
            for g, v in zip(grads, self.trainable_variables, strict=True)
        ]
        return loss, terms, grads, logits, jem.no_chains(images, unlabeled)

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
                kept(terms[name]), sgld_weight if name in SGLD_REPORTS else weight
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
            loss_weights=keras.saving.serialize_keras_object(self.loss_weights),
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
        """Also reads the flat SGLD keys (`sgld_settings.FLAT_KEYS`) and weight
        keys (`loss_weights.FLAT_KEYS`) of models saved before the settings and
        the weights were one object each, defaults for those missing."""
        config = copy.deepcopy(config)  # deserializing consumes the nested dict
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        for key, flat_keys, from_flat in (
            ("sgld", sgld_settings.FLAT_KEYS, SGLDSettings.from_flat),
            ("loss_weights", loss_weights_lib.FLAT_KEYS, LossWeights.from_flat),
        ):
            flat = {k: config.pop(k) for k in flat_keys if k in config}
            if key in config:
                if flat:
                    raise ValueError(
                        f"HDGEClassifier config has both {key!r} and the flat keys "
                        f"{sorted(flat)}; expected one of the two."
                    )
                config[key] = keras.saving.deserialize_keras_object(config[key])
            else:
                config[key] = from_flat(flat)
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
