"""Stochastic gradient Langevin dynamics (SGLD) on the classifier's energy.

JEM reads the logits f(x) as energies: log p(x) = logsumexp_y f(x)[y] - log Z and
log p(x, y) = f(x)[y] - log Z, i.e. the energy is E(x) = -logsumexp_y f(x)[y]
(`hdge_tf.energy.log_density`). SGLD climbs the unnormalized log density (descends
the energy):

    x <- x + step_size * ∇x log p(x) + noise_std * N(0, I)

with JEM's defaults step_size = 1, noise_std = 0.01 (not the textbook step²/2 pairing).

`sgld_chain` is one compiled function with every number a tensor, so chains of any
length, step size or batch size reuse its trace; `sgld_chain_xla` is the same chain
XLA-compiled (a training step compiled with XLA compiles the chain it calls too).
Every random draw of a training step (`fold_in`, `uniform_noise`, `uniform_labels`,
`normal_noise`, the replay buffer's) gives the same numbers with and without XLA.
`ReplayBuffer` holds JEM's persistent chain states: training starts short chains
from its rows and writes the results back.
The network runs in inference mode and the chain, the gradient and the logsumexp stay
in float32 even under a mixed-precision policy (bfloat16 would round a 0.01 step on a
pixel of 1.0 away).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from hdge_tf.energy import log_density

_SEED_MAX = 2**31 - 1
# SGLD steps per iteration of the chain's while loop (`_chain`).
UNROLL = 5
# Where every image of the library lives (data, chain starts, exported inputs).
DATA_RANGE = (-1.0, 1.0)
# The stateless RNG algorithm, named: with TF's default "auto_select", XLA turns
# seeds outside [0, 2^31) (every fold_in result may be one) into other keys than
# TF's kernels do, so compiled and uncompiled steps would draw different numbers.
# Outside XLA "philox" is what auto_select picks on CPUs and GPUs: same numbers.
RNG_ALG = "philox"


def seed_pair(seed=None) -> tf.Tensor:
    """An int32 [2] seed for stateless ops: from an int, a [2] tensor as is, or for
    None drawn from TF's global generator (seeded by `keras.utils.set_random_seed`)."""
    if seed is None:
        return tf.random.uniform([2], 0, _SEED_MAX, dtype=tf.int32)
    if not tf.is_tensor(seed) and np.ndim(seed) == 0:
        return tf.constant([int(seed), 0], tf.int32)
    return tf.cast(seed, tf.int32)


def fold_in(seed, data) -> tf.Tensor:
    """`tf.random.experimental.stateless_fold_in` with `RNG_ALG`: a new [2] seed
    from `seed` and the integer `data`, the same inside and outside XLA."""
    return tf.random.experimental.stateless_fold_in(seed, data, alg=RNG_ALG)


def _uniform_bits(shape, seed) -> tf.Tensor:
    """Uniform float32 in [0, 1) on a 2^-24 grid, from stateless uint32 bits."""
    bits = tf.random.stateless_uniform(
        shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg=RNG_ALG
    )
    return tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * 2.0**-24


def uniform_noise(shape, seed, minval=0.0, maxval=1.0) -> tf.Tensor:
    """Stateless uniform float32 noise in [minval, maxval) that is the same inside
    and outside XLA.

    TF's float `stateless_uniform`/`stateless_normal` draw other numbers when
    XLA-compiled (the same Philox bits, turned into floats another way; XLA's
    normal uses the inverse erf, TF's kernels Box-Muller), while the integer bits
    agree. This and `normal_noise` build their floats from those bits
    themselves, exactly for uniforms. `seed`: int32/int64 [2].
    """
    return minval + (maxval - minval) * _uniform_bits(shape, seed)


def uniform_labels(num, num_classes: int, seed) -> tf.Tensor:
    """`num` class labels drawn uniformly from [0, num_classes), int32 [num]: the
    one draw of labels in a training step (chains' labels and starts), the same
    inside and outside XLA (`uniform_noise`)."""
    return tf.cast(uniform_noise([num], seed) * num_classes, tf.int32)


def normal_noise(shape, seed) -> tf.Tensor:
    """Stateless standard-normal float32 noise (Box-Muller on `uniform_noise`'s
    bits): the same inside and outside XLA up to the rounding of log, sqrt and cos
    (about 1e-7)."""
    u = _uniform_bits(tf.concat([[2], tf.cast(shape, tf.int32)], 0), seed)
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - u[0]))  # 1 - u in (0, 1]
    return radius * tf.cos((2.0 * math.pi) * u[1])


def log_density_gradient(
    model: keras.Model, images: tf.Tensor, labels=None
) -> tuple[tf.Tensor, tf.Tensor]:
    """(log density [N], its gradient with respect to the images [N, H, W, C]).

    The gradient of the batch sum is each example's own gradient: in inference mode
    no layer mixes examples. Called under an outer tape, the outer tape records this
    gradient too, so it can be differentiated again (e.g. by an attack).
    """
    images = tf.cast(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        density = log_density(model, images, labels)
    return density, tape.gradient(density, images)


def sgld_step(
    model: keras.Model,
    images: tf.Tensor,
    step_size,
    noise_std,
    noise: tf.Tensor,
    labels=None,
) -> tf.Tensor:
    """One Langevin step, given standard-normal `noise` of the images' shape."""
    _, grad = log_density_gradient(model, images, labels)
    return images + step_size * grad + noise_std * noise


def _chain(
    model: keras.Model,
    images: tf.Tensor,
    steps: tf.Tensor,
    step_size: tf.Tensor,
    noise_std: tf.Tensor,
    seed: tf.Tensor,
    labels: tf.Tensor | None = None,
    clip: tf.Tensor | None = None,
) -> tf.Tensor:
    """`steps` SGLD steps from `images` (float32 [N, H, W, C]); returns the last state.

    All numbers are tensors (steps int32, step_size/noise_std float32, seed int32 [2]
    for the stateless noise, step i using fold_in(seed, i), `clip` float32 [2]
    bounds every step is clipped to, or None), so a new chain length or step size
    does not retrace. Traces once per model, per labels/no labels, per clipped or
    not, and (relaxed) per image shape.
    """

    def step(i, x):
        noise = normal_noise(tf.shape(x), fold_in(seed, i))
        x = sgld_step(model, x, step_size, noise_std, noise, labels)
        if clip is not None:
            x = tf.clip_by_value(x, clip[0], clip[1])
        return x

    def unrolled(i, x):
        # `UNROLL` steps per iteration: a while loop's own cost per iteration
        # was about 40% of a 32-chain step of the demo CNN (BENCHMARKS.md).
        for j in range(UNROLL):
            x = step(i * UNROLL + j, x)
        return i + 1, x

    # While loops with a tensor bound; XLA compiles each as one While whose
    # shapes are fixed per compiled image shape. Step i always draws
    # fold_in(seed, i), however the steps are grouped.
    blocks = steps // UNROLL
    i, images = tf.while_loop(
        lambda i, _: i < blocks, unrolled, (tf.constant(0, tf.int32), images)
    )
    _, images = tf.while_loop(
        lambda i, _: i < steps,
        lambda i, x: (i + 1, step(i, x)),
        (i * UNROLL, images),
    )
    return images


sgld_chain = tf.function(_chain, reduce_retracing=True)
# The same chain XLA-compiled (compiled once per image shape and labels/no labels).
sgld_chain_xla = tf.function(_chain, reduce_retracing=True, jit_compile=True)


def sgld(
    model: keras.Model,
    images,
    steps: int,
    step_size: float = 1.0,
    noise_std: float = 0.01,
    labels=None,
    seed: int | None = None,
    jit_compile: bool = False,
    clip: bool = False,
) -> tf.Tensor:
    """Runs an SGLD chain from `images` ([N, H, W, C] in [-1, 1]); returns float32
    samples of the same shape. With `labels` ([N] int) the chain samples p(x|y) ∝
    exp f(x)[y]; without, p(x) ∝ Σ_y exp f(x)[y]. `clip` keeps every step inside
    `DATA_RANGE` (else chains may wander far outside the images' range).

    `seed` fixes the noise; None draws one from TF's global generator (seeded by
    `keras.utils.set_random_seed`). `jit_compile` runs the XLA-compiled chain.
    """
    if steps < 0:
        raise ValueError(f"SGLD steps must be >= 0, got {steps}.")
    chain = sgld_chain_xla if jit_compile else sgld_chain
    return chain(
        model,
        tf.convert_to_tensor(images, tf.float32),
        tf.constant(steps, tf.int32),
        tf.constant(step_size, tf.float32),
        tf.constant(noise_std, tf.float32),
        seed_pair(seed),
        None if labels is None else tf.convert_to_tensor(labels, tf.int32),
        data_range() if clip else None,
    )


def data_range() -> tf.Tensor:
    """`DATA_RANGE` as the float32 [2] tensor the chain clips to."""
    return tf.constant(DATA_RANGE, tf.float32)


@keras.saving.register_keras_serializable(package="hdge_tf")
class ReplayBuffer(keras.layers.Layer):
    """JEM's replay buffer: `size` persistent SGLD chain states, [size, H, W, C].

    Held in a non-trainable float32 weight, so `.keras` files and checkpoints carry
    it; initialised uniform in [-1, 1]. With `num_classes`, the buffer is split into
    that many equal consecutive slices, slice c holding the chains of p(x|y=c).

    Args:
      size: number of stored images (JEM: 10,000).
      image_shape: (H, W, C) of one image.
      num_classes: split for class-conditional sampling, or None (unsplit).
    """

    def __init__(
        self, size: int, image_shape, num_classes: int | None = None, **kwargs
    ):
        kwargs.setdefault("dtype", "float32")  # chain states never follow a policy
        super().__init__(**kwargs)
        if size < 1:
            raise ValueError(f"Replay buffer size must be positive, got {size}.")
        if num_classes is not None and size % num_classes:
            raise ValueError(
                f"Replay buffer size {size} is not divisible by num_classes="
                f"{num_classes}: the class-conditional buffer needs one equal slice "
                f"per class (e.g. size {size - size % num_classes or num_classes})."
            )
        self.size = int(size)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = None if num_classes is None else int(num_classes)
        # Every replica writes identical rows (see `write`); keep the first's.
        self.images = self.add_weight(
            name="images",
            shape=(self.size, *self.image_shape),
            initializer=keras.initializers.RandomUniform(-1.0, 1.0),
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
        )
        self.built = True

    @property
    def class_size(self) -> int:
        """Rows per class slice (the whole buffer when unsplit)."""
        return self.size // (self.num_classes or 1)

    def sample(
        self,
        batch_size=None,
        labels=None,
        reinit_freq: float = 0.05,
        seed=None,
        fresh=None,
    ):
        """Chain starts and the buffer rows they came from.

        Draws `batch_size` rows uniformly (with replacement) from the buffer, or with
        `labels` ([N] int) one row per label from that class's slice; a fraction
        `reinit_freq` of the starts (each independently) is replaced by a fresh
        start: uniform [-1, 1] noise as in JEM, or the row of `fresh` ([N, H, W, C],
        e.g. `chain_starts.ClassGaussians` draws). `seed`: int, int32 [2] tensor
        or None.

        Returns (images [N, H, W, C] float32, indices [N] int32); write the chains'
        final states back with `write(indices, samples)`.
        """
        if not 0.0 <= reinit_freq <= 1.0:
            raise ValueError(f"reinit_freq must be in [0, 1], got {reinit_freq}.")
        seed = seed_pair(seed)
        index_seed, reinit_seed, noise_seed = (fold_in(seed, i) for i in range(3))
        if labels is None:
            if batch_size is None:
                raise ValueError("ReplayBuffer.sample needs batch_size or labels.")
            n = tf.convert_to_tensor(batch_size, tf.int32)
            indices = tf.random.stateless_uniform(
                [n], index_seed, 0, self.size, dtype=tf.int32, alg=RNG_ALG
            )
        else:
            if self.num_classes is None:
                raise ValueError(
                    "Class-conditional sampling needs a buffer built with num_classes."
                )
            labels = tf.cast(labels, tf.int32)
            n = tf.shape(labels)[0]
            offsets = tf.random.stateless_uniform(
                [n], index_seed, 0, self.class_size, dtype=tf.int32, alg=RNG_ALG
            )
            indices = labels * self.class_size + offsets
        starts = tf.gather(self.images, indices)
        reinit = uniform_noise([n], reinit_seed) < reinit_freq
        if fresh is None:
            fresh = uniform_noise(tf.shape(starts), noise_seed, *DATA_RANGE)
        reinit = tf.reshape(reinit, [-1] + [1] * len(self.image_shape))
        return tf.where(reinit, tf.cast(fresh, tf.float32), starts), indices

    def write(self, indices, images, keep=True) -> None:
        """Stores chain states `images` ([N, H, W, C]) at rows `indices` ([N] int).

        `keep` (a bool scalar, identical on every replica) False writes nothing, for
        a skipped training step.

        Under a multi-replica strategy every replica gathers all replicas' rows and
        writes them all, so the buffer stays identical across replicas. When two
        chains drew the same row, one of them is kept.
        """
        indices = tf.cast(indices, tf.int32)
        images = tf.cast(images, tf.float32)
        replica = tf.distribute.get_replica_context()
        distributed = replica is not None and replica.num_replicas_in_sync > 1
        if distributed:
            indices = replica.all_gather(indices, axis=0)
            images = replica.all_gather(images, axis=0)
        index = indices[:, tf.newaxis]
        keep = tf.convert_to_tensor(keep, tf.bool)
        images = tf.where(keep, images, tf.gather_nd(self.images, index))
        if distributed:
            # Mirrored variables cannot scatter in replica context; this copies
            # the whole buffer once per step.
            self.images.assign(
                tf.tensor_scatter_nd_update(self.images.value, index, images)
            )
        else:
            self.images.value.scatter_nd_update(index, images)

    def call(self, inputs=None):
        return self.images

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            size=self.size,
            image_shape=list(self.image_shape),
            num_classes=self.num_classes,
        )
        return config
