"""Evaluates a trained run: classification, calibration, OOD detection, robustness.

    hdge-eval --workdir=/tmp/hdge/mnist5k_hdge \
        [--config.eval.ood_sets="('digits', 'interp')" --config.eval.pgd.steps=20 ...]
    hdge-eval --model=path/model.keras --output_dir=/tmp/eval [--config.data.name=...]

The model is RUN/model.keras (or --model). The data and eval settings are the run's
config.json, on top of the defaults of --config (configs/base.py unless given; pass
the run's experiment file, e.g. --config=configs/mnist5k_hdge.py, for runs whose
config.json predates an eval option), with any --config.* flags given on the command
line applied last. Writes report.json, report.md and figures to RUN/eval/ (or
--output_dir); see hdge_tf.evaluation.report.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from hdge_tf.configs import base
from hdge_tf.evaluation import report

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(Path(base.__file__)),
    "Config file with defaults for fields the run's config.json lacks; "
    "--config.eval.* (etc.) flags override the run's values.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory holding config.json and model.keras."
)
_MODEL = flags.DEFINE_string(
    "model", None, "A .keras file to evaluate instead of WORKDIR/model.keras."
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where the report goes; default WORKDIR/eval."
)


_MERGED_SECTIONS = ("data", "eval")


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
    overrides: dict[str, object],
) -> ml_collections.ConfigDict:
    """defaults <- the run's config.json dict <- {dotted.name: value} overrides.

    The run's `data` and `eval` sections are merged into the defaults, so fields the
    run lacks (it may predate an eval option) keep them; other sections (backbone,
    loss, ...) are the run's as they are.
    """
    config = defaults.copy_and_resolve_references()
    config.unlock()
    for key, value in _tuples(run_config or {}).items():
        if key in _MERGED_SECTIONS and key in config:
            config[key].update(value)
        else:
            config[key] = value
    for name, value in overrides.items():
        *parents, leaf = name.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def _passed_overrides() -> dict[str, object]:
    """Values of the --config.* flags present on the command line, by dotted name."""
    overrides = {}
    for name in flags.FLAGS:
        if name.startswith("config.") and flags.FLAGS[name].present:
            node = _CONFIG.value
            for part in name.split(".")[1:]:
                node = node[part]
            overrides[name.removeprefix("config.")] = node
    return overrides


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        run_dir, model_path = report.run_paths(_WORKDIR.value, _MODEL.value)
    except ValueError as err:
        raise app.UsageError(str(err)) from err
    config_path = run_dir / "config.json"
    run_config = None
    if config_path.is_file():
        run_config = json.loads(config_path.read_text())
    else:
        logging.warning("No %s: using configs/base.py defaults.", config_path)
    # The flag's value already holds the overrides; they are applied again last so
    # that they also win over the run's config.json.
    config = resolve_config(_CONFIG.value, run_config, _passed_overrides())
    output_dir = Path(_OUTPUT_DIR.value or run_dir / "eval")
    logging.info("Evaluating %s into %s.", model_path, output_dir)
    model = report.load_model(model_path)
    result = report.run_evaluation(model, config, output_dir)
    print(f"Report: {output_dir / report.REPORT_MD} ({result['seconds']['total']}s)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
