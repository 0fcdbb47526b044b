"""Classifier backbones whose logits define the HDGE/JEM energy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from hdge_tf.networks.keras_application import KerasApplication
from hdge_tf.networks.small_cnn import SmallCNN
from hdge_tf.networks.wide_resnet import WideResNet

BACKBONES: dict[str, type[keras.Model]] = {
    "wrn": WideResNet,
    "small_cnn": SmallCNN,
    "keras_application": KerasApplication,
}


def build_backbone(
    name: str, num_classes: int, image_shape: Sequence[int], **kwargs: Any
) -> keras.Model:
    """Builds a backbone by its config name, so configs stay plain strings.

    `kwargs` go to the backbone's constructor (e.g. `depth`, `width`, `norm`).
    """
    if name not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"Unknown backbone {name!r}; known backbones: {known}.")
    return BACKBONES[name](num_classes=num_classes, image_shape=image_shape, **kwargs)


__all__ = ["BACKBONES", "KerasApplication", "SmallCNN", "WideResNet", "build_backbone"]
