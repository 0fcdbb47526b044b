"""One run of `hdge-reproduce`: train (or resume), evaluate, sample; one record.

`run_job` is the whole run; its program is `python -m hdge_tf.bin.hdge_reproduce_job`
(bin/hdge_reproduce_job.py), the command line each `plan.Job` holds.

The record (`plan.RECORD` in the workdir) is written last and atomically, so a run
killed at any point has none and is resumed by the next `hdge-reproduce` call
(training resumes from its checkpoint; evaluation and sampling are redone).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from absl import logging

from hdge_tf import data as data_lib
from hdge_tf import generation, plots, training
from hdge_tf.evaluation import protocol, report
from hdge_tf.evaluation.sample_quality import SampleJudge
from hdge_tf.reproduce import plan
from hdge_tf.run_dir import RunDir, load_model

ROLES = ("run", "judge")
# Per-class and unconditional sample counts, SGLD steps and seed (`parse_sampling`).
DEFAULT_SAMPLING = "per_class=50,unconditional=500,steps=100,seed=0"


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
        "gate": {
            k: gate[k]
            for k in ("test_tpr", "blank", "fpr", "density_only")
            if k in gate
        },
    }


def reference_features(judge: SampleJudge, config) -> np.ndarray:
    """The judge's features of the training split: what samples are compared with."""
    images, _ = data_lib.load_training_arrays(config.data)
    return judge.features(images)


def real_ceiling(judge_model, config, sampling: dict) -> dict:
    """The judge's scores of as many real test images as conditional samples."""
    judge = SampleJudge(judge_model)
    images, labels = protocol.protocol_test_arrays(config)
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


def run_job(
    config,
    run_dir: str | Path,
    variant: str,
    role: str = "run",
    sampling: dict[str, int] | None = None,
    judge_dir: str | Path | None = None,
) -> dict:
    """Trains (or resumes) `config` in `run_dir`, evaluates it and, with
    `judge_dir` (the judge's run directory), draws and scores samples; the judge
    (`role="judge"`) also scores real test images. Writes the record last, as
    `plan.RECORD` in `run_dir`, and returns it."""
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; expected one of {ROLES}.")
    sampling = sampling or parse_sampling(DEFAULT_SAMPLING)
    run = RunDir(run_dir)
    seconds, began = {}, time.time()
    model, metrics = training.train_model(config, run.path)
    seconds["train"] = round(time.time() - began, 1)

    stage = time.time()
    evaluation = report.run_evaluation(model, config, run.eval_dir)
    seconds["eval"] = round(time.time() - stage, 1)
    record = {
        "variant": variant,
        "role": role,
        "seed": int(config.seed),
        "metrics": run_metrics(metrics, evaluation),
        "train_seconds": metrics["train_seconds_this_call"],
    }
    stage = time.time()
    if role == "judge":
        record["ceiling"] = real_ceiling(model, config, sampling)
    if judge_dir is not None:
        judge_model = load_model(RunDir(judge_dir).model_file)
        record["samples"] = score_samples(
            model, judge_model, config, sampling, run.samples_dir
        )
    seconds["samples"] = round(time.time() - stage, 1)
    record["seconds"] = seconds
    temporary = run.path / (plan.RECORD + ".tmp")
    temporary.write_text(json.dumps(record, indent=2))
    temporary.replace(run.path / plan.RECORD)
    logging.info("Wrote %s", run.path / plan.RECORD)
    return record
