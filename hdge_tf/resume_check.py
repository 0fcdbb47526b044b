"""Resuming a run with another config: what may change and what may not.

Keys whose change would alter what the checkpoint holds or what the model is for
(`RESUME_BLOCKING_KEYS`: the network, the logit queue's size, the replay buffer's,
whether there is a replay buffer, the optimizer and its loss scale, the dataset)
are an error; every other difference (more epochs, another learning rate, loss
weight, divergence threshold or evaluation setting) is logged as a warning and
applies from the resumed epoch on.
"""

from __future__ import annotations

import json

from absl import logging

from hdge_tf.run_dir import RunDir

# Dotted config keys (and key prefixes) a resumed run must keep: see the docstring.
RESUME_BLOCKING_KEYS = (
    "backbone",
    "data.name",
    "loss.queue_size",
    "loss.replay_buffer_size",
    "loss.px_sgld_weight",
    "loss.pxy_sgld_weight",
    "train.optimizer",
    "precision",
)


def _flatten(value: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


_ABSENT = object()


def config_changes(previous: dict, config) -> dict[str, tuple]:
    """{dotted key: (previous value, new value)} of every leaf where `config` (a
    ConfigDict) differs from `previous` (a run's config.json dict); a key missing on
    one side has the value `_ABSENT` there."""
    old = _flatten(previous)
    new = _flatten(json.loads(config.to_json_best_effort()))
    return {
        key: (old.get(key, _ABSENT), new.get(key, _ABSENT))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    }


def _blocks_resume(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RESUME_BLOCKING_KEYS)


def _describe(changes: dict[str, tuple]) -> str:
    def show(value) -> str:
        return "(absent)" if value is _ABSENT else json.dumps(value)

    return ", ".join(f"{k} {show(a)} -> {show(b)}" for k, (a, b) in changes.items())


def check_resume(run: RunDir, config) -> None:
    """Before resuming `run` with `config`: raises ValueError naming the keys that
    differ from its config.json and would change the model (`RESUME_BLOCKING_KEYS`),
    and logs a warning naming the other keys that differ. Does nothing for a run
    without a checkpoint (nothing to resume) or without config.json."""
    previous = run.read_config() if run.has_checkpoint() else None
    if previous is None:
        return
    changes = config_changes(previous, config)
    blocking = {k: v for k, v in changes.items() if _blocks_resume(k)}
    if blocking:
        raise ValueError(
            f"Cannot resume {run.path}: the config differs from its config.json in "
            f"keys that change the model: {_describe(blocking)}. Pass the run's "
            "values, or use a new workdir."
        )
    if changes:
        logging.warning(
            "Resuming %s with config values that differ from its config.json: %s.",
            run.path,
            _describe(changes),
        )
