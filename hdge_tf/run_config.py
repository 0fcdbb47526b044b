"""A run's config read back: the defaults, then the run's config.json, then
command-line overrides, with the rules for runs written by older versions."""

from __future__ import annotations

import ml_collections
from absl import logging

from hdge_tf.run_dir import RunDir

# Sections of a run's config.json merged into the defaults (`resolve_config`).
MERGED_SECTIONS = ("data", "eval")


def _tuples(value):
    """JSON lists back to the tuples the ConfigDict fields are typed with."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def resolve_config(
    defaults: ml_collections.ConfigDict,
    run_config: dict | None,
    overrides: dict[str, object] | None = None,
) -> ml_collections.ConfigDict:
    """defaults <- the run's config.json dict <- {dotted.name: value} overrides.

    The run's `data` and `eval` sections are merged into the defaults, so fields the
    run lacks (it may predate an eval option) keep them, except
    `data.validation_size`, which is 0 for a run that predates it; other sections
    (backbone, loss, ...) are the run's as they are.
    """
    config = defaults.copy_and_resolve_references()
    config.unlock()
    run_data = (run_config or {}).get("data")
    if run_data is not None and "validation_size" not in run_data:
        # A run from before the hold-out trained on every image: none of them is
        # held out, whatever today's default.
        config.data.validation_size = 0
    for key, value in _tuples(run_config or {}).items():
        if key in MERGED_SECTIONS and key in config:
            config[key].update(value)
        else:
            config[key] = value
    for name, value in (overrides or {}).items():
        *parents, leaf = name.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def load_run_config(
    run: RunDir,
    defaults: ml_collections.ConfigDict,
    overrides: dict[str, object] | None = None,
) -> ml_collections.ConfigDict:
    """`resolve_config` of the run's config.json (the defaults alone, with a
    warning, when the run has none)."""
    run_config = run.read_config()
    if run_config is None:
        logging.warning("No %s: using the default config.", run.config_file)
    return resolve_config(defaults, run_config, overrides)
