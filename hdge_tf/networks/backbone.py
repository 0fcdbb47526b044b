"""The base of our backbones: a functional model configured by its arguments."""

from __future__ import annotations

from typing import Any

import keras


class Backbone(keras.Model):
    """Functional image -> logits model whose config is its constructor arguments,
    so `from_config` and `.keras` loading rebuild it by calling the constructor."""

    def __init__(self, inputs, outputs, arguments: dict[str, Any], **kwargs: Any):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.arguments = dict(arguments)
        for key, value in self.arguments.items():
            setattr(self, key, value)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, **self.arguments}
