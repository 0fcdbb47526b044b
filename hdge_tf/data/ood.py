"""Out-of-distribution image sets, in the format and shape of a model's inputs.

Three kinds of names, all returning float32 NHWC images in [-1, 1]:

- synthetic sets built from the in-distribution test images (JEM, Sec. 5.2):
  ``interp`` (the mean of two random test images), ``noise`` (uniform in [-1, 1]),
  ``constant`` (one random flat colour per image); and ``photos``, crops of natural
  photographs (scikit-learn's two sample images, so it needs no download) at random
  places and scales, grey for one-channel models: real-world inputs that are not
  the data;
- the embedded sets (``digits``, ``mnist5k``), their test split;
- any TFDS image dataset (``svhn_cropped``, ``cifar10``, ``cifar100``, ``celeb_a``,
  ...), its test split; labels are not needed, so sets without a ``label`` feature
  (CelebA) work too.

Every set is adapted to the model's input shape: grayscale <-> RGB, a central crop
to the target aspect ratio (CelebA is 218x178) and a bilinear resize. 28x28 TFDS sets
are first padded with -1 to 32x32, as for training (see `tfds_source`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from hdge_tf.data import embedded, tfds_source
from hdge_tf.data.pipeline import load_arrays

SYNTHETIC_SETS = ("interp", "noise", "constant", "photos")
# The side of a `photos` crop, as a fraction of the photograph's shorter side.
_PHOTO_CROP_SCALES = (0.1, 0.6)
_BATCH = 512
# ITU-R 601 luma weights; linear, so they apply to [-1, 1] pixels unchanged.
_LUMA = (0.299, 0.587, 0.114)


def valid_names_message() -> str:
    embedded_names = sorted(embedded.EMBEDDED_LOADERS)
    return (
        f"synthetic {list(SYNTHETIC_SETS)}, embedded {embedded_names}, or any TFDS "
        "image dataset name (e.g. svhn_cropped, cifar10, cifar100, celeb_a)"
    )


def check_ood_set_name(name: str) -> None:
    """Raises ValueError naming the valid choices unless `name` is a known set."""
    if name in SYNTHETIC_SETS or name in embedded.EMBEDDED_LOADERS:
        return
    if tfds_source.is_tfds_name(name):  # also "name/config:version"
        return
    raise ValueError(f"Unknown OOD set {name!r}; valid names: {valid_names_message()}.")


def adapt_images(images, image_shape: Sequence[int]) -> tf.Tensor:
    """Converts [N, h, w, c] images in [-1, 1] to [N, *image_shape]: channels first
    (gray -> RGB repeats, RGB -> gray takes luma), then a central crop to the target
    aspect ratio, then a bilinear (antialiased) resize, clipped to [-1, 1]."""
    images = tf.cast(images, tf.float32)
    height, width, channels = (int(d) for d in image_shape)
    have = images.shape[-1]
    if have != channels:
        if have == 1:
            images = tf.repeat(images, channels, axis=-1)
        elif have == 3 and channels == 1:
            images = tf.reduce_sum(images * tf.constant(_LUMA), -1, keepdims=True)
        else:
            raise ValueError(
                f"Cannot convert images with {have} channels to {channels} channels."
            )
    h, w = images.shape[1], images.shape[2]
    if (h, w) == (height, width):
        return images
    # Crop the longer side so the resize keeps the aspect ratio.
    if h * width > w * height:
        crop_h, crop_w = round(w * height / width), w
    else:
        crop_h, crop_w = h, round(h * width / height)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    images = images[:, top : top + crop_h, left : left + crop_w, :]
    resized = tf.image.resize(images, (height, width), "bilinear", antialias=True)
    return tf.clip_by_value(resized, -1.0, 1.0)


def synthetic_set(name: str, in_images: np.ndarray, seed: int = 0) -> np.ndarray:
    """A synthetic OOD set with as many images as `in_images`, of the same shape."""
    rng = np.random.default_rng(seed)
    n, shape = len(in_images), in_images.shape[1:]
    if name == "interp":
        # Pair each image with the next one along a random cycle: never itself.
        order = rng.permutation(n)
        partner = np.empty(n, np.int64)
        partner[order] = np.roll(order, -1)
        images = 0.5 * (in_images + in_images[partner])
    elif name == "noise":
        images = rng.uniform(-1.0, 1.0, (n, *shape))
    elif name == "constant":
        colours = rng.uniform(-1.0, 1.0, (n, 1, 1, shape[-1]))
        images = np.broadcast_to(colours, (n, *shape))
    elif name == "photos":
        return photo_crops(n, shape, rng)
    else:
        raise ValueError(
            f"Unknown synthetic OOD set {name!r}; expected one of {SYNTHETIC_SETS}."
        )
    return np.asarray(images, np.float32)


def photo_crops(n: int, image_shape: Sequence[int], rng: np.random.Generator):
    """`n` square crops of scikit-learn's sample photographs, each at a random
    place and a side of `_PHOTO_CROP_SCALES` of the photograph's shorter side,
    resized to `image_shape` (grey for one channel), in [-1, 1]."""
    from sklearn.datasets import load_sample_images  # only this set needs it

    photos = load_sample_images().images  # two RGB uint8 images
    crops = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(*_PHOTO_CROP_SCALES))
        top, left = rng.integers(height - side + 1), rng.integers(width - side + 1)
        crop = photo[top : top + side, left : left + side].astype(np.float32)
        crop = tf.image.resize(crop, image_shape[:2], "bilinear", antialias=True)
        crops.append(crop.numpy() / 127.5 - 1.0)
    return adapt_images(np.stack(crops), image_shape).numpy()


def _tfds_images(
    name: str,
    image_shape: Sequence[int],
    data_dir: str | None,
    download: bool,
    limit: int,
) -> np.ndarray:
    ds = tfds_source.load_tfds_images(name, data_dir, download)
    if limit:
        ds = ds.take(limit)
    # Resize per batch in the pipeline so large images (CelebA) are never all held.
    ds = ds.batch(_BATCH).map(lambda batch: adapt_images(batch, image_shape))
    batches = list(ds.as_numpy_iterator())
    if not batches:
        return np.zeros((0, *image_shape), np.float32)
    return np.concatenate(batches)


def load_ood_set(
    name: str,
    in_images: np.ndarray,
    image_shape: Sequence[int] | None = None,
    data_dir: str | None = None,
    download: bool = True,
    limit: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """The OOD set `name` as float32 [N, *image_shape] in [-1, 1].

    Args:
      name: a synthetic, embedded or TFDS set name (see module docstring).
      in_images: the in-distribution test images the synthetic sets are built from.
      image_shape: (H, W, C) of the model; defaults to the shape of `in_images`.
      data_dir, download: where TFDS data lives and whether it may be downloaded.
      limit: keep at most this many images (the first ones in file order); 0 = all.
      seed: drives the synthetic sets.

    Raises:
      ValueError: unknown name (the message lists the valid ones).
      DatasetUnavailableError: a TFDS set is neither prepared nor downloadable.
    """
    check_ood_set_name(name)
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0 = all), got {limit}.")
    image_shape = tuple(image_shape or in_images.shape[1:])
    if name in SYNTHETIC_SETS:
        images = synthetic_set(name, np.asarray(in_images, np.float32), seed)
        images = images[:limit] if limit else images
        return adapt_images(images, image_shape).numpy()
    if name in embedded.EMBEDDED_LOADERS:
        images, _ = load_arrays(name, "test")
        images = images[:limit] if limit else images
        return adapt_images(images, image_shape).numpy()
    return _tfds_images(name, image_shape, data_dir, download, limit)
