"""One run of `hdge-reproduce`: train (or resume), evaluate, sample; one record.

    python -m hdge_tf.reproduce.job --config=configs/mnist5k_hdge.py \
        --workdir=runs/reproduce/runs/hdge/seed0 --variant=hdge \
        [--samples --judge=runs/reproduce/runs/judge] [--config.seed=0 ...]

The record (`plan.RECORD` in the workdir) is written last and atomically, so a run
killed at any point has none and is resumed by the next `hdge-reproduce` call
(training resumes from its checkpoint; evaluation and sampling are redone).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from hdge_tf import data as data_lib
from hdge_tf import generation, plots, training, workdir
from hdge_tf.evaluation import report
from hdge_tf.evaluation.sample_quality import SampleJudge
from hdge_tf.reproduce import plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_VARIANT = flags.DEFINE_string("variant", None, "The variant's name in the plan.")
_ROLE = flags.DEFINE_enum("role", "run", ["run", "judge"], "A variant or the judge.")
_SAMPLES = flags.DEFINE_bool("samples", False, "Draw and score sample grids.")
_JUDGE = flags.DEFINE_string("judge", None, "The judge's run directory.")
_SAMPLING = flags.DEFINE_string(
    "sampling",
    "per_class=50,unconditional=500,steps=100,seed=0",
    "Sample counts, SGLD steps and seed, as k=v pairs.",
)
flags.mark_flags_as_required(["config", "workdir", "variant"])


def parse_sampling(text: str) -> dict[str, int]:
    values = dict(item.split("=", 1) for item in text.split(",") if item)
    expected = {"per_class", "unconditional", "steps", "seed"}
    if set(values) != expected:
        raise ValueError(f"--sampling needs exactly {sorted(expected)}, got {text!r}.")
    return {k: int(v) for k, v in values.items()}


def run_metrics(metrics: dict, evaluation: dict) -> dict:
    """The numbers the report aggregates, from metrics.json and report.json."""
    aurocs: dict[str, dict[str, float]] = {}
    for set_name, result in evaluation["ood"]["sets"].items():
        for score, values in result.get("scores", {}).items():
            aurocs.setdefault(score, {})[set_name] = values["auroc"]
    classification = evaluation["classification"]
    gate = evaluation.get("gate", {})
    return {
        "accuracy": classification["accuracy"],
        "nll": classification["nll"],
        "brier": classification["brier"],
        "ece": evaluation["calibration"]["ece"],
        "auroc": aurocs,
        "kept_epoch": metrics["selected_epoch"],
        "last_epoch_accuracy": metrics["last_epoch"]["test_accuracy"],
        "divergence_restarts": metrics["divergence_restarts"],
        # What hdge-export's gate admits: the test split and each OOD set.
        "gate": {k: gate[k] for k in ("test_tpr", "fpr") if k in gate},
    }


def reference_features(judge: SampleJudge, config) -> np.ndarray:
    """The judge's features of the training split: what samples are compared with."""
    images, _ = data_lib.load_training_arrays(config.data)
    return judge.features(images)


def real_ceiling(judge_model, config, sampling: dict) -> dict:
    """The judge's scores of as many real test images as conditional samples."""
    judge = SampleJudge(judge_model)
    images, labels = report.protocol_test_arrays(config)
    # The first per_class images of each class (test splits may be sorted by class).
    keep = np.concatenate(
        [
            np.flatnonzero(labels == c)[: sampling["per_class"]]
            for c in np.unique(labels)
        ]
    )
    return judge.score(images[keep], labels[keep], reference_features(judge, config))


def score_samples(model, judge_model, config, sampling: dict, output_dir: Path):
    """Conditional and unconditional SGLD samples of `model` from every start it
    has (`generation.available_starts`; unconditional chains not from the class
    Gaussians), at 0 steps (the starts themselves: what
    the initializer alone gives) and at `sampling["steps"]`: the judge's scores
    as {mode: {start: {steps: scores}}}, grids of the sampled ones in
    `output_dir` (MODE_START.png)."""
    judge = SampleJudge(judge_model)
    reference = reference_features(judge, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for index, mode in enumerate(("conditional", "unconditional")):
        conditional = mode == "conditional"
        result[mode] = {}
        for start in generation.available_starts(model):
            if start == "gaussian" and not conditional:
                continue  # a mixture of the class Gaussians tells nothing more
            result[mode][start] = {}
            for steps in sorted({0, sampling["steps"]}):
                began = time.time()
                images, labels = generation.draw_samples(
                    model,
                    sampling["per_class"] if conditional else sampling["unconditional"],
                    conditional,
                    steps,
                    start,
                    seed=sampling["seed"] + index,
                )
                scores = judge.score(images, labels, reference)
                scores["seconds"] = round(time.time() - began, 1)
                result[mode][start][str(steps)] = scores
            png = output_dir / f"{mode}_{start}.png"
            _sample_grid(
                images,
                labels,
                sampling,
                png,
                f"{mode}: {steps} SGLD steps from {start}",
            )
    return result


def _sample_grid(images, labels, sampling: dict, path: Path, title: str) -> None:
    """At most 10 samples per class (conditional) or 100 in all, as a grid."""
    grid = images
    if labels is not None:
        shown = min(sampling["per_class"], 10)
        grid = images.reshape(-1, sampling["per_class"], *images.shape[1:])
        grid = grid[:, :shown].reshape(-1, *images.shape[1:])
    plots.plot_image_grid(
        grid[:100],
        path,
        row_labels=None
        if labels is None
        else [f"class {c}" for c in np.unique(labels)],
        title=title,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    sampling = parse_sampling(_SAMPLING.value)
    run = workdir.RunDir(_WORKDIR.value)
    seconds, began = {}, time.time()
    model, metrics = training.train_model(config, run.path)
    seconds["train"] = round(time.time() - began, 1)

    stage = time.time()
    evaluation = report.run_evaluation(model, config, run.eval_dir)
    seconds["eval"] = round(time.time() - stage, 1)
    record = {
        "variant": _VARIANT.value,
        "role": _ROLE.value,
        "seed": int(config.seed),
        "metrics": run_metrics(metrics, evaluation),
        "train_seconds": metrics["train_seconds_this_call"],
    }
    stage = time.time()
    if _ROLE.value == "judge":
        record["ceiling"] = real_ceiling(model, config, sampling)
    if _SAMPLES.value:
        if not _JUDGE.value:
            raise app.UsageError("--samples needs --judge=JUDGE_RUN_DIR.")
        judge_model = workdir.load_model(workdir.RunDir(_JUDGE.value).model_file)
        record["samples"] = score_samples(
            model, judge_model, config, sampling, run.samples_dir
        )
    seconds["samples"] = round(time.time() - stage, 1)
    record["seconds"] = seconds
    temporary = run.path / (plan.RECORD + ".tmp")
    temporary.write_text(json.dumps(record, indent=2))
    temporary.replace(run.path / plan.RECORD)
    logging.info("Wrote %s", run.path / plan.RECORD)


if __name__ == "__main__":
    from hdge_tf.bin import cli

    cli.run(main, "hdge-reproduce job")
