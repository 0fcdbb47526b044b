"""JEM's SGLD terms of an HDGEClassifier: the chains, where they start, the
replay buffer's use, and the network passes that score data and samples.

JEM fits log p(x) (and log p(x|y)) by maximum likelihood with the model's own
samples: each training step continues short SGLD chains from rows of the replay
buffer (a share `reinit_freq` restarted from uniform noise, or from the class
Gaussians of `hdge_tf.chain_starts`), scores the data and the samples, and
`losses.sgld_nll_x` pulls the data's energy down and the samples' up, with
`losses.energy_l2` beside it. How the passes treat BatchNorm is
`SGLDSettings.pass_mode` (`hdge_tf.norm_statistics`).

`JEMTerms` holds that logic for one model; the state it uses is the model's and
is saved with it: `model.replay_buffer` and `model.chain_starts` (made by
`chain_state`), the learned energy scale (`model.energy_scale`). The model's
training step asks it for the step's chains (`draw_chains`) and their terms
(`passes`), and assembles the loss.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from hdge_tf import energy, losses, norm_statistics, sampling
from hdge_tf.chain_starts import ClassGaussians
from hdge_tf.loss_weights import LossWeights
from hdge_tf.sgld_settings import SGLDSettings

# Per-epoch read-outs of each SGLD term's energies: the data's and the samples'
# (`hdge_tf.energy_penalty` says why they matter).
SGLD_MONITORS = {
    "px_sgld": ("px_data_energy", "px_sample_energy"),
    "pxy_sgld": ("pxy_data_energy", "pxy_sample_energy"),
}
# What a training step reports only when it ran the SGLD terms (`sgld.every`).
SGLD_REPORTS = frozenset(
    ["energy_l2", "energy_scale", *SGLD_MONITORS, *sum(SGLD_MONITORS.values(), ())]
)
# The chains' stateless random streams of a training step
# (`HDGEClassifier.step_seed`; stream 0 is the input noise's).
(
    PX_CHAINS_STREAM,
    PXY_CHAINS_STREAM,
    PXY_LABELS_STREAM,  # drawn labels of the log p(x|y) chains (sgld.batch_size)
    PX_LABELS_STREAM,  # of the log p(x) chains (sgld.px_conditional_chains)
) = range(1, 5)


def class_chains(weights: LossWeights, settings: SGLDSettings) -> bool:
    """Whether any SGLD chain samples p(x|y) (then the buffer is class-split)."""
    return weights["pxy_sgld"] > 0 or (
        weights["px_sgld"] > 0 and settings.px_conditional_chains
    )


def chain_state(
    weights: LossWeights, settings: SGLDSettings, num_classes: int, image_shape
) -> tuple[sampling.ReplayBuffer | None, ClassGaussians | None]:
    """The layers that hold the chains' state, for the model to own and save:
    the replay buffer (class-split when a chain samples p(x|y)) and, with
    `settings.start="class_gaussian"`, the class Gaussians; (None, None)
    without an SGLD term (models trained without one load as they were)."""
    if not weights.sgld_on:
        return None, None
    buffer = sampling.ReplayBuffer(
        settings.buffer_size,
        image_shape,
        num_classes if class_chains(weights, settings) else None,
        name="replay_buffer",
    )
    starts = None
    if settings.start == "class_gaussian":
        starts = ClassGaussians(
            num_classes,
            image_shape,
            uniform_fraction=settings.start_uniform_fraction,
            name="chain_starts",
        )
    return buffer, starts


class JEMTerms:
    """The SGLD terms of `model` (an HDGEClassifier), `names`: those whose
    weight is > 0, none for a model trained without them."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.names = tuple(t for t in SGLD_MONITORS if model.loss_weights[t] > 0)

    @property
    def settings(self) -> SGLDSettings:
        return self.model.sgld

    @property
    def batch_norms(self) -> list:
        # Found anew on each use: a list on the model would be tracked (and saved).
        return norm_statistics.batch_norm_layers(self.model.backbone)

    @property
    def pass_mode(self) -> str:
        """`SGLDSettings.pass_mode` resolved for the model's backbone: the modes
        differ only in how BatchNorm is treated, so without it every mode is
        JEM's ("training", the classification pass's logits reused); "auto" is
        "sample_batch" with it."""
        if not self.batch_norms:
            return "training"
        mode = self.settings.pass_mode
        return "sample_batch" if mode == "auto" else mode

    def monitors(self) -> list[str]:
        """The energy read-outs the terms report (`SGLD_MONITORS`)."""
        return [m for t in self.names for m in SGLD_MONITORS[t]]

    def fit_starts(self, images, labels) -> None:
        """Fits the model's class Gaussians to `images` ([N, H, W, C], labels
        [N]) and refills the replay buffer from them."""
        model = self.model
        model.chain_starts.fit(images, labels)
        buffer = model.replay_buffer
        if buffer.num_classes is not None:  # slice c holds class c's chains
            labels = tf.repeat(tf.range(model.num_classes), buffer.class_size)
        else:
            labels = sampling.uniform_labels(
                buffer.size, model.num_classes, [model.seed, 1]
            )
        buffer.images.assign(model.chain_starts.sample(labels, [model.seed, 2]))

    # The step's chains -------------------------------------------------------

    def draw_chains(self, images, labels, unlabeled=None) -> dict:
        """This step's chains of every term: {"px_sgld"/"pxy_sgld": (samples,
        buffer indices, chain labels or None)}. The log p(x) chains are as many
        as the images log p(x) is fitted to (`unlabeled` if given)."""
        weights, chains = self.model.loss_weights, {}
        if weights["px_sgld"] > 0:
            num_chains = self.num_chains(images if unlabeled is None else unlabeled)
            px_labels = None
            if self.settings.px_conditional_chains:
                px_labels = self.random_labels(num_chains, PX_LABELS_STREAM)
            chains["px_sgld"] = self.chains(num_chains, px_labels, PX_CHAINS_STREAM)
        if weights["pxy_sgld"] > 0:
            chain_labels = self.chain_labels(labels)
            chains["pxy_sgld"] = self.chains(tf.shape(chain_labels)[0], chain_labels)
        return chains

    def chains(self, num_chains, labels=None, stream=PXY_CHAINS_STREAM):
        """(samples, buffer indices, labels) of `num_chains` chains; with `labels`
        they sample p(x|y) for those labels. Runs outside the gradient tape with
        the network in inference mode; the compiled chain works in float32."""
        model, settings = self.model, self.settings
        seed = model.step_seed(PX_CHAINS_STREAM if labels is None else stream)
        fresh = None
        if model.chain_starts is not None:
            start_labels = labels
            if labels is None:  # p(x) chains restart from a random class's Gaussian
                start_labels = sampling.uniform_labels(
                    num_chains, model.num_classes, sampling.fold_in(seed, 3)
                )
            fresh = model.chain_starts.sample(start_labels, sampling.fold_in(seed, 2))
        starts, indices = model.replay_buffer.sample(
            num_chains,
            labels=labels,
            reinit_freq=settings.reinit_freq,
            seed=sampling.fold_in(seed, 0),
            fresh=fresh,
        )
        samples = sampling.sgld_chain(
            model,
            starts,
            tf.constant(settings.steps, tf.int32),
            tf.constant(settings.step_size, tf.float32),
            tf.constant(settings.noise_std, tf.float32),
            sampling.fold_in(seed, 1),
            labels,
            sampling.data_range() if settings.clip else None,
        )
        return tf.stop_gradient(samples), indices, labels

    def num_chains(self, batch: tf.Tensor):
        """Chains per step on this replica: `sgld.batch_size` split over the
        replicas, else one per image of `batch`."""
        if not self.settings.batch_size:
            return tf.shape(batch)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return tf.constant(-(-self.settings.batch_size // replicas), tf.int32)

    def chain_labels(self, labels: tf.Tensor) -> tf.Tensor:
        """Labels of the log p(x|y) chains: the batch's, or with `sgld.batch_size`
        uniformly drawn ones (HDGE's code draws them the same way)."""
        if not self.settings.batch_size:
            return labels
        return self.random_labels(self.num_chains(labels), PXY_LABELS_STREAM)

    def random_labels(self, num, stream: int) -> tf.Tensor:
        """`num` class labels drawn uniformly from this step's stream `stream`."""
        model = self.model
        return sampling.uniform_labels(num, model.num_classes, model.step_seed(stream))

    def no_chains(self, images, unlabeled=None) -> dict:
        """{term: (samples, indices)} shaped as a step's chains, written nowhere:
        what a step that skips the terms returns (`sgld.every`)."""
        px_data = images if unlabeled is None else unlabeled
        shape = self.model.replay_buffer.image_shape
        chains = {}
        for name in self.names:
            num = self.num_chains(px_data if name == "px_sgld" else images)
            samples = tf.zeros(tf.concat([[num], shape], 0))
            chains[name] = (samples, tf.zeros([num], tf.int32))
        return chains

    # The terms ---------------------------------------------------------------

    def joint_pass(self, images, chains):
        """(data logits, {term: sample logits}) of one training-mode pass over
        the data batch and every chain's samples, BatchNorm normalizing all of
        them with the data rows' statistics (which alone move the running
        ones): pass mode "data_batch"."""
        rows = tf.shape(images)[0]
        samples = [chains[name][0] for name in chains]
        with norm_statistics.statistics_of_first_rows(self.batch_norms, rows):
            joint = self.model(tf.concat([images, *samples], 0), training=True)
        sizes = [rows, *(tf.shape(s)[0] for s in samples)]
        logits, *parts = tf.split(joint, tf.stack(sizes), axis=0)
        return logits, dict(zip(chains, parts, strict=True))

    def passes(
        self, mode, images, logits, labels, chains, unlabeled, sample_logits=None
    ) -> dict[str, tf.Tensor]:
        """`terms` with the network passes of `mode` (`pass_mode`); samples never
        mix into the data batch's statistics (as in JEM's code): they get their
        own pass, or share the data's statistics (`sample_logits` of
        `joint_pass`)."""
        model = self.model
        samples_training = mode in ("training", "sample_batch")
        data_logits = logits
        if mode == "inference":
            data_logits = model(images, training=False)
        px_logits = None
        if unlabeled is not None and "px_sgld" in chains:
            px_logits = model(unlabeled, training=mode == "training")
        kept = None
        if mode == "sample_batch" and self.batch_norms:
            kept = norm_statistics.read(self.batch_norms)
        terms = self.terms(
            data_logits, labels, chains, px_logits, samples_training, sample_logits
        )
        if kept is not None:  # the samples' batch leaves no trace
            norm_statistics.restore(self.batch_norms, kept)
        return terms

    def terms(
        self, logits, labels, chains, px_logits=None, training=True, sample_logits=None
    ) -> dict[str, tf.Tensor]:
        """JEM's SGLD terms (and the energy L2 penalty) given the data batch's
        logits and `chains`: {"px_sgld"/"pxy_sgld": (samples, _, chain labels)}.
        `px_logits`: logits of the images log p(x) is fitted to, if not
        `logits`'; `training`: the mode the samples are scored in, that of the
        data's logits; `sample_logits`: {term: logits} already computed. Also
        returns the mean energies (`SGLD_MONITORS`)."""
        model = self.model
        terms, penalty = {}, []
        scale = model.energy_scale
        for name, (samples, _, chain_labels) in chains.items():
            if sample_logits is not None and name in sample_logits:
                logits_of_samples = sample_logits[name]
            else:
                logits_of_samples = model(samples, training=training)
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
        if model.loss_weights["energy_l2"]:
            terms["energy_l2"] = tf.add_n(penalty)
        if scale is not None:
            terms["energy_scale"] = tf.stop_gradient(scale)
        return terms

    def skipped_terms(self) -> dict[str, tf.Tensor]:
        """Zeros for what `terms` returns, on a step that skips them."""
        names = [n for t in self.names for n in (t, *SGLD_MONITORS[t])]
        if self.model.loss_weights["energy_l2"]:
            names.append("energy_l2")
        terms = {name: tf.constant(0.0) for name in names}
        scale = self.model.energy_scale
        if scale is not None:
            terms["energy_scale"] = tf.stop_gradient(scale)
        return terms
