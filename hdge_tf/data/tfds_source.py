"""TFDS image-classification datasets in the same format as the embedded sets.

Images become float32 in [-1, 1] and labels int32; 28x28 sets are padded with
-1 to 32x32 so that MNIST-like data fits the same networks as mnist5k.

Data is only downloaded when it is not prepared yet, and a download on a
machine without network fails within seconds rather than after minutes of
retries.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import tensorflow as tf
import tensorflow_datasets as tfds

from hdge_tf.data.autotune import set_autotune

_UNPADDED_SIZE = 28
_PADDED_SIZE = 32


class DatasetUnavailableError(RuntimeError):
    """A TFDS dataset is not prepared locally and could not be downloaded."""


def _how_to_provide(name: str) -> str:
    return (
        "To provide it, run once on a machine with internet access "
        f"`tfds build {name} --data_dir=DIR` (or this loader with "
        "download=True), copy DIR here and pass --config.data.data_dir=DIR."
    )


def _unavailable(
    builder: tfds.core.DatasetBuilder, name: str, reason: str
) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"TFDS dataset '{name}' is not available in {builder.data_dir}: "
        f"{reason}. {_how_to_provide(name)}"
    )


def _unresolvable_hosts(builder: tfds.core.DatasetBuilder) -> list[str]:
    """Hosts of the builder's download URLs that DNS cannot resolve.

    TFDS retries every failed request with exponential backoff (over three
    minutes per dataset offline), so an unreachable network is detected here
    first. Builders without registered URLs are left to TFDS.
    """
    try:
        urls = builder.url_infos or {}
    except Exception:
        return []
    hosts = sorted({urlparse(url).hostname for url in urls} - {None})
    unresolved = []
    for host in hosts:
        try:
            socket.getaddrinfo(host, 443)
        except (socket.gaierror, UnicodeError):
            unresolved.append(host)
    return unresolved


def _downloads_from_network(builder: tfds.core.DatasetBuilder) -> bool:
    """False when TFDS's downloader is replaced, as by tfds.testing.mock_data."""
    method = type(builder).download_and_prepare
    return getattr(method, "__module__", "").startswith("tensorflow_datasets.core")


def _ensure_prepared(
    builder: tfds.core.DatasetBuilder, name: str, download: bool
) -> None:
    if builder.is_prepared():
        return
    if not download:
        raise _unavailable(builder, name, "it is not prepared and download=False")
    hosts = _unresolvable_hosts(builder) if _downloads_from_network(builder) else []
    if hosts:
        raise _unavailable(
            builder,
            name,
            f"cannot download, {', '.join(hosts)} does not resolve (no network?)",
        )
    try:
        builder.download_and_prepare()
    except Exception as error:  # Any failure means "unavailable".
        reason = f"download failed with {type(error).__name__}: {error}"
        raise _unavailable(builder, name, reason) from error


def _check_features(builder: tfds.core.DatasetBuilder, name: str) -> None:
    features = builder.info.features
    if not {"image", "label"} <= set(features.keys()):
        raise ValueError(
            f"TFDS dataset '{name}' has features {sorted(features.keys())}; "
            "an image classification dataset with 'image' and 'label' is needed."
        )


def is_tfds_name(name: str) -> bool:
    """Whether `name` ("name", "name/config" or "name:version") is a TFDS builder."""
    base = name.split(":")[0].split("/")[0]
    return base in tfds.list_builders(with_community_datasets=False)


def pad_to_32(images):
    """Pads 28x28 images, [..., 28, 28, C] in [-1, 1], with background (-1) to
    [..., 32, 32, C], so that MNIST-like data fits the networks of 32x32 sets."""
    margin = (_PADDED_SIZE - _UNPADDED_SIZE) // 2
    leading = [[0, 0]] * (len(images.shape) - 3)
    paddings = [*leading, [margin, margin], [margin, margin], [0, 0]]
    return tf.pad(images, paddings, constant_values=-1.0)


def _needs_padding(builder: tfds.core.DatasetBuilder) -> bool:
    height, width = builder.info.features["image"].shape[:2]
    return height == width == _UNPADDED_SIZE


def _normalise(
    image: tf.Tensor, label: tf.Tensor, pad: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    image = tf.cast(image, tf.float32) / 127.5 - 1.0
    if pad:
        image = pad_to_32(image)
    return image, tf.cast(label, tf.int32)


def load_tfds(
    name: str,
    split: str,
    data_dir: str | None = None,
    download: bool = True,
) -> tf.data.Dataset:
    """(image, label) pairs of a TFDS split, in file order.

    Raises:
      DatasetUnavailableError: the data is not prepared under `data_dir` and
        `download` is off or fails.
      ValueError: the dataset has no 'image' and 'label' features.
    """
    builder = tfds.builder(name, data_dir=data_dir)
    _check_features(builder, name)
    _ensure_prepared(builder, name, download)
    pad = _needs_padding(builder)
    ds = builder.as_dataset(split=split, shuffle_files=False).map(
        lambda example: _normalise(example["image"], example["label"], pad),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return set_autotune(ds, enabled=False)


def load_tfds_images(
    name: str,
    data_dir: str | None = None,
    download: bool = True,
    splits: tuple[str, ...] = ("test", "validation", "train"),
) -> tf.data.Dataset:
    """Images alone, from the first of `splits` the dataset has, in file order.

    For OOD sets, which need no class labels (CelebA's labels are attributes).
    """
    builder = tfds.builder(name, data_dir=data_dir)
    if "image" not in builder.info.features:
        raise ValueError(
            f"TFDS dataset '{name}' has features {sorted(builder.info.features)}; "
            "an image set needs an 'image' feature."
        )
    _ensure_prepared(builder, name, download)
    # Unprepared (mocked) builders may not know their splits: assume the first.
    available = set(builder.info.splits) or {splits[0]}
    split = next((s for s in splits if s in available), None)
    if split is None:
        raise ValueError(f"TFDS dataset '{name}' has no split among {splits}.")
    pad = _needs_padding(builder)
    ds = builder.as_dataset(split=split, shuffle_files=False).map(
        lambda example: _normalise(example["image"], 0, pad)[0],
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return set_autotune(ds, enabled=False)


def num_examples(name: str, split: str, data_dir: str | None = None) -> int:
    """Size of a split as recorded when the dataset was prepared."""
    builder = tfds.builder(name, data_dir=data_dir)
    try:
        return builder.info.splits[split].num_examples
    except KeyError as error:
        reason = f"the size of split '{split}' is unknown ({error})"
        raise _unavailable(builder, name, reason) from error


def num_classes(name: str, data_dir: str | None = None) -> int:
    """Number of label classes, known without preparing the data."""
    builder = tfds.builder(name, data_dir=data_dir)
    _check_features(builder, name)
    return builder.info.features["label"].num_classes
