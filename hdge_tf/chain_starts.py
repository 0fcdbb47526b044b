"""Where SGLD chains start: uniform noise, or per-class Gaussians fitted to data.

JEM starts (and restarts) its chains from uniform noise in [-1, 1], far from any
image, so short chains spend most of their steps leaving noise behind. JEM++
(Yang & Ji 2021) starts them from a Gaussian per class fitted to the training
images instead: blurry class averages that the chains only have to sharpen.
`ClassGaussians` holds those Gaussians as model weights (saved with the model) and
draws starts with a `uniform_fraction` of plain uniform noise mixed in, so the
model keeps learning to pull noise towards the data too.

A full covariance per class would cost C·D² floats (377 MB for CIFAR-10), so each
class keeps its mean, its top `rank` principal directions scaled by their standard
deviations, and one residual standard deviation for the rest:

    x = mean_c + U_c z + s_c ε,   z ~ N(0, I_rank), ε ~ N(0, I_D),  clipped to [-1, 1]

which matches the class's variance along its main directions and in total. Draws
use `sampling.normal_noise` (not tfp's samplers) so that a training step draws the
same numbers with and without XLA.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import sampling

START_KINDS = ("uniform", "class_gaussian")


@keras.saving.register_keras_serializable(package="hdge_tf")
class ClassGaussians(keras.layers.Layer):
    """Per-class low-rank Gaussians over images, fitted with `fit(images, labels)`.

    Args:
      num_classes: C.
      image_shape: (H, W, C) of one image.
      rank: principal directions kept per class.
      uniform_fraction: share of `sample`'s starts that are uniform noise instead.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape,
        rank: int = 32,
        uniform_fraction: float = 0.1,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # chain starts never follow a policy
        super().__init__(**kwargs)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}.")
        if not 0.0 <= uniform_fraction <= 1.0:
            raise ValueError(
                f"uniform_fraction must be in [0, 1], got {uniform_fraction}."
            )
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.rank = int(rank)
        self.uniform_fraction = float(uniform_fraction)
        dim = int(np.prod(self.image_shape))

        def state(name, shape):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer="zeros",
                trainable=False,
                dtype="float32",
                aggregation="only_first_replica",
            )

        self.means = state("means", (self.num_classes, dim))
        self.factors = state("factors", (self.num_classes, dim, self.rank))
        self.residual_std = state("residual_std", (self.num_classes,))
        # Images each class was fitted on; all zero until `fit`.
        self.counts = state("counts", (self.num_classes,))
        self.built = True

    @property
    def fitted(self) -> bool:
        return bool(np.all(self.counts.numpy() > 0))

    def fit(self, images, labels) -> None:
        """Fits class c's Gaussian to the `images` ([N, H, W, C]) labelled c."""
        images = np.asarray(images, np.float64).reshape(len(images), -1)
        labels = np.asarray(labels).reshape(-1)
        dim = images.shape[1]
        means = np.zeros((self.num_classes, dim))
        factors = np.zeros((self.num_classes, dim, self.rank))
        residual = np.zeros(self.num_classes)
        counts = np.zeros(self.num_classes)
        for c in range(self.num_classes):
            rows = images[labels == c]
            if len(rows) < 2:
                raise ValueError(
                    f"Cannot fit the chain starts of class {c}: it has {len(rows)} "
                    "training image(s), and a Gaussian needs at least 2."
                )
            means[c] = rows.mean(0)
            centered = rows - means[c]
            _, singular, directions = np.linalg.svd(centered, full_matrices=False)
            variances = singular**2 / (len(rows) - 1)
            kept = min(self.rank, len(variances))
            factors[c, :, :kept] = directions[:kept].T * np.sqrt(variances[:kept])
            # The variance left outside the kept directions, spread evenly.
            rest = max(variances[kept:].sum(), 0.0) / max(dim - kept, 1)
            residual[c] = np.sqrt(rest)
            counts[c] = len(rows)
        for weight, value in (
            (self.means, means),
            (self.factors, factors),
            (self.residual_std, residual),
            (self.counts, counts),
        ):
            weight.assign(value.astype(np.float32))

    def sample(self, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Chain starts for `labels` ([N] int), float32 [N, H, W, C] in [-1, 1]:
        class Gaussians, a `uniform_fraction` of them uniform noise. `seed`:
        int32/int64 [2]."""
        labels = tf.cast(labels, tf.int32)
        n = tf.shape(labels)[0]
        dim = self.means.shape[1]
        latent_seed, residual_seed, mix_seed, uniform_seed = (
            sampling.fold_in(seed, i) for i in range(4)
        )
        z = sampling.normal_noise(tf.stack([n, self.rank]), latent_seed)
        eps = sampling.normal_noise(tf.stack([n, dim]), residual_seed)
        gaussian = (
            tf.gather(self.means, labels)
            + tf.einsum("ndr,nr->nd", tf.gather(self.factors, labels), z)
            + tf.gather(self.residual_std, labels)[:, tf.newaxis] * eps
        )
        gaussian = tf.reshape(gaussian, tf.concat([[n], self.image_shape], 0))
        gaussian = tf.clip_by_value(gaussian, *sampling.DATA_RANGE)
        uniform = sampling.uniform_noise(tf.shape(gaussian), uniform_seed, -1.0, 1.0)
        pick_uniform = sampling.uniform_noise([n], mix_seed) < self.uniform_fraction
        pick_uniform = tf.reshape(pick_uniform, [-1] + [1] * len(self.image_shape))
        return tf.where(pick_uniform, uniform, gaussian)

    def call(self, inputs=None):
        return self.means

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            image_shape=list(self.image_shape),
            rank=self.rank,
            uniform_fraction=self.uniform_fraction,
        )
        return config
