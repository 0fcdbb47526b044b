"""What the model's settings objects share: saved in Keras configs as a dict of
their fields, and read from a trainer config's flat `loss.*` keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar


class FlatKeyed:
    """A frozen-dataclass mixin. `FLAT_KEYS` maps each flat key (a trainer
    config's `loss` section, an older model config) to its field."""

    FLAT_KEYS: ClassVar[Mapping[str, str]] = {}

    def get_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Mapping):
        return cls(**config)

    @classmethod
    def from_flat(cls, flat: Mapping):
        """The object named by flat keys (others are ignored), defaults for
        those missing."""
        keys = cls.FLAT_KEYS
        return cls(**{keys[k]: v for k, v in flat.items() if k in keys})
