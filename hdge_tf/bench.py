"""Throughput and memory benchmark of HDGE training, evaluation and PGD.

A configuration is (mode, precision, network, classes, batch size):

    ce    cross-entropy only (the queue is batch-sized: CE does not read it)
    hdge  CE + contrastive log p(x|y) against a K-slot logit queue
    jem   hdge + JEM's SGLD term for log p(x) (`sgld_steps` steps, replay buffer)

Each configuration builds the backbone and an `HDGEClassifier` under its Keras
precision policy, compiles Adam and times the model's own train function (the one
`fit` runs) on a fixed batch of uniform [-1, 1] noise: `warmup` steps (tracing
included), then `repeats` steps, each synced by fetching the loss. Reported: median
step time, images/s and how often the step was traced (1 = no retracing). Peak RSS is
`ru_maxrss` of a fresh process per configuration (`isolate=True`), read after the
model is built and again after the timed steps.

`epoch_overhead` trains the mnist5k demo with `hdge-train`'s trainer and compares
its second epoch's wall time with the pure step time times the steps per epoch.
`checks` turns the results into the ratios the issue sets targets for;
`format_report` prints them.

    hdge-bench --output=bench.json      # the default table, see bin/hdge_bench.py
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hdge_tf import data as data_lib
from hdge_tf import hardware, training
from hdge_tf.configs import mnist5k_hdge
from hdge_tf.evaluation import ood, robustness
from hdge_tf.hardware import precision_policy
from hdge_tf.model import HDGEClassifier
from hdge_tf.networks import build_backbone
from hdge_tf.optimization import build_optimizer

MODES = ("ce", "hdge", "jem")
PRECISIONS = ("float32", "mixed_bfloat16")
# Small networks by name; "wrn-D-W" is any Wide ResNet.
NETWORKS = {
    # The mnist5k demo's CNN: fast enough for tests at 8x8.
    "small_cnn": ("small_cnn", {"filters": (32, 64, 128), "convs_per_stage": 1}),
}
_WRN = re.compile(r"wrn-(\d+)-(\d+)")

# Targets of the issue; each applies at the settings it was stated for.
TARGET_QUEUE_SIZE = 65_536
HDGE_OVER_CE_MAX = {10: 1.03, 100: 1.10}  # by number of classes, at K = 65,536
CONTRASTIVE_EXTRA_MB_MAX = 200.0  # at 100 classes, K = 65,536, batch 256
CONTRASTIVE_MB_SETTINGS = {"num_classes": 100, "queue_size": 65_536, "batch_size": 256}
BF16_SPEEDUP_MIN = 2.5
JEM_OVER_CE_MAX = 16.0  # in CE steps, with 20 SGLD steps
JEM_SGLD_STEPS = 20
EPOCH_TOLERANCE = 0.10  # epoch time within 10% of step time x steps
EPOCH_CHECK_EPOCHS = 4
FIT_END_EPOCHS = 6  # of the autotuning comparison

PGD_NORM = "linf"
PGD_EPSILON = 16 / 255  # 8/255 on the [0, 1] scale


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmarked training configuration."""

    mode: str = "hdge"
    precision: str = "float32"
    network: str = "wrn-16-4"
    num_classes: int = 10
    batch_size: int = 64
    image_shape: tuple[int, int, int] = (32, 32, 3)
    queue_size: int = TARGET_QUEUE_SIZE
    sgld_steps: int = JEM_SGLD_STEPS
    replay_buffer_size: int = 10_000

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; expected one of {MODES}.")
        parse_network(self.network)  # bad names fail here, not in a child process
        keras.mixed_precision.Policy(self.precision)
        object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.precision}/b{self.batch_size}"

    def model_kwargs(self) -> dict:
        """`HDGEClassifier` arguments of this mode."""
        if self.mode == "ce":
            # The model always keeps (and writes) a queue; a batch-sized one keeps
            # its cost out of the CE baseline.
            return {"pxy_contrast_weight": 0.0, "queue_size": self.batch_size}
        kwargs = {"pxy_contrast_weight": 1.0, "queue_size": self.queue_size}
        if self.mode == "jem":
            kwargs.update(
                px_sgld_weight=1.0,
                sgld_steps=self.sgld_steps,
                replay_buffer_size=self.replay_buffer_size,
            )
        return kwargs


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """How much to time. Zero `eval_images` or `pgd_steps` skips that part."""

    warmup: int = 3
    repeats: int = 10
    eval_images: int = 1024
    eval_batch_size: int = 256
    eval_repeats: int = 3
    pgd_steps: int = 5

    def __post_init__(self):
        if self.warmup < 1 or self.repeats < 1 or self.eval_repeats < 1:
            raise ValueError(
                "warmup, repeats and eval_repeats must be >= 1 (the first step "
                f"traces), got {self.warmup}, {self.repeats}, {self.eval_repeats}."
            )


def configurations(
    modes: Sequence[str] = MODES,
    precisions: Sequence[str] = PRECISIONS,
    batch_sizes: Sequence[int] = (64,),
    **settings,
) -> list[BenchConfig]:
    """The grid, precision-major then batch size then mode (`settings` are the
    other `BenchConfig` fields)."""
    return [
        BenchConfig(mode=m, precision=p, batch_size=int(b), **settings)
        for p in precisions
        for b in batch_sizes
        for m in modes
    ]


def parse_network(name: str) -> tuple[str, dict]:
    """("wrn", {depth, width}) for "wrn-D-W", else an entry of `NETWORKS`."""
    match = _WRN.fullmatch(name)
    if match:
        return "wrn", {"depth": int(match[1]), "width": int(match[2])}
    if name in NETWORKS:
        backbone, kwargs = NETWORKS[name]
        return backbone, dict(kwargs)
    raise ValueError(
        f"Unknown network {name!r}: use wrn-DEPTH-WIDTH (e.g. wrn-16-4, wrn-28-10) "
        f"or one of {sorted(NETWORKS)}."
    )


def random_batch(
    batch_size: int, image_shape: Sequence[int], num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images uniform in [-1, 1] (never all zeros, which could take fast paths)
    [N, H, W, C] float32, and labels uniform over the classes [N] int32."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (batch_size, *image_shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, batch_size).astype(np.int32)
    return images, labels


def build_model(config: BenchConfig) -> HDGEClassifier:
    """Backbone + classifier of `config`, compiled with Adam, under the policy
    that is current (see `precision_policy`)."""
    backbone_name, kwargs = parse_network(config.network)
    backbone = build_backbone(
        backbone_name, config.num_classes, config.image_shape, **kwargs
    )
    model = HDGEClassifier(backbone, **config.model_kwargs())
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    return model


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / KB


# Timing ---------------------------------------------------------------------------


class TraceCounter:
    """Counts traces of a model's train step.

    Keras does not expose its train function's `tf.function`, so the Python
    `train_step` is wrapped instead: inside `tf.function` it only runs when the
    function traces, so the count is the number of traces (eagerly, one per step).
    """

    def __init__(self, model: keras.Model):
        if model.train_function is not None:
            raise ValueError(
                "Attach the TraceCounter before the train function is made "
                "(before fit or make_train_function)."
            )
        self.count = 0
        step = model.train_step

        def counted_train_step(data):
            self.count += 1
            return step(data)

        model.train_step = counted_train_step


def _timed(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls after `warmup` calls; `fn` must sync."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_train_steps(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    warmup: int = 3,
    repeats: int = 10,
    counter: TraceCounter | None = None,
) -> dict:
    """Times the model's train function (the one `fit` runs) on one fixed batch.

    The batch comes from a repeated `tf.data` dataset, as in `fit`, so each step
    pays the same input and dispatch costs. `counter` must be attached before the
    train function was made; without one, one is attached here.
    """
    if counter is None:
        counter = TraceCounter(model)
    model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

    def step():
        # Fetching a value ends the step: the time covers the whole update.
        return model.train_function(iterator)["loss"].numpy()

    for _ in range(warmup):
        step()
    traces_after_warmup = counter.count
    seconds = _timed(step, 0, repeats)
    median = statistics.median(seconds)
    return {
        "step_seconds": seconds,
        "median_step_seconds": median,
        "images_per_second": len(images) / median,
        "traces": counter.count,
        "retraces_while_timing": counter.count - traces_after_warmup,
    }


def time_evaluation(
    model: keras.Model,
    images: np.ndarray,
    batch_size: int = 256,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """Images/s of the evaluation scores: `ood.predict_logits` then `ood.log_px`.

    `first_call_seconds` includes tracing; `predict_logits` traces on every call,
    so `one_batch_seconds` (a call on one batch) shows that fixed cost.
    """

    def scores(x):
        return ood.log_px(ood.predict_logits(model, x, batch_size)).numpy()

    start = time.perf_counter()
    scores(images)
    first = time.perf_counter() - start
    seconds = _timed(lambda: scores(images), max(warmup - 1, 0), repeats)
    one_batch = _timed(lambda: scores(images[:batch_size]), 0, repeats)
    median = statistics.median(seconds)
    return {
        "images": len(images),
        "batch_size": batch_size,
        "first_call_seconds": first,
        "seconds": seconds,
        "median_seconds": median,
        "images_per_second": len(images) / median,
        "one_batch_seconds": statistics.median(one_batch),
    }


def time_pgd(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int = 5,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """Seconds per PGD iteration (L∞, ε = 16/255 in [-1, 1] units) on one batch:
    the median time of a `robustness.pgd_attack` call over its `steps`."""
    if steps < 1:
        raise ValueError(f"PGD needs steps >= 1, got {steps}.")

    def attack():
        return robustness.pgd_attack(
            model, images, labels, PGD_NORM, PGD_EPSILON, steps
        ).numpy()

    seconds = _timed(attack, warmup, repeats)
    median = statistics.median(seconds)
    return {
        "batch_size": len(images),
        "steps": steps,
        "call_seconds": seconds,
        "median_call_seconds": median,
        "iteration_seconds": median / steps,
    }


# Configurations ---------------------------------------------------------------------


def run_configuration(
    config: BenchConfig,
    options: TimingOptions = TimingOptions(),
    evaluate: bool = False,
    pgd: bool = False,
    seed: int = 0,
) -> dict:
    """Times one configuration in this process; see the module docstring.

    Returns the configuration's fields plus the train-step timing, peak RSS after
    building (`peak_rss_build_mb`) and after the timed steps (`peak_rss_train_mb`),
    and with `evaluate`/`pgd` the `eval`/`pgd` timings.
    """
    keras.utils.set_random_seed(seed)
    logging.info("Benchmarking %s (%s).", config.name, config.network)
    images, labels = random_batch(
        config.batch_size, config.image_shape, config.num_classes, seed
    )
    result = dataclasses.asdict(config)
    result["model_queue_size"] = config.model_kwargs()["queue_size"]
    with precision_policy(config.precision):
        model = build_model(config)
        result["jit_compile"] = bool(model.jit_compile)
        result["peak_rss_build_mb"] = peak_rss_mb()
        result.update(
            time_train_steps(model, images, labels, options.warmup, options.repeats)
        )
        result["peak_rss_train_mb"] = peak_rss_mb()
        result["step_extra_rss_mb"] = (
            result["peak_rss_train_mb"] - result["peak_rss_build_mb"]
        )
        result["eval"] = result["pgd"] = None
        if evaluate and options.eval_images:
            eval_images, _ = random_batch(
                options.eval_images, config.image_shape, config.num_classes, seed + 1
            )
            result["eval"] = time_evaluation(
                model, eval_images, options.eval_batch_size, 1, options.eval_repeats
            )
        if pgd and options.pgd_steps:
            result["pgd"] = time_pgd(
                model, images, labels, options.pgd_steps, 1, options.eval_repeats
            )
    del model
    gc.collect()
    keras.backend.clear_session()
    return result


# Epoch overhead -------------------------------------------------------------------


class EpochTimer(keras.callbacks.Callback):
    """Wall time and train-step traces of each epoch (the counter is attached when
    `fit` hands over the model, before it makes its train function)."""

    def __init__(self):
        super().__init__()
        self.counter: TraceCounter | None = None
        self.seconds: list[float] = []
        self.traces: list[int] = []

    def set_model(self, model):
        super().set_model(model)
        if self.counter is None:
            self.counter = TraceCounter(model)

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._traces = time.perf_counter(), self.counter.count

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.traces.append(self.counter.count - self._traces)


def epoch_overhead(
    config=None, epochs: int = 4, warmup: int = 3, pure_epochs: int = 3
) -> dict:
    """Median wall time of `hdge-train`'s epochs after the first (which traces)
    against pure step time x steps.

    Runs `training.train_model` (the trainer behind `hdge-train`: its pipeline,
    checkpoint, CSV, TensorBoard and progress-bar callbacks) on `config`, default
    configs/mnist5k_hdge.py, in a temporary workdir, without per-epoch validation,
    OOD scoring or sample grids, which are separate passes over other data. The
    pure time is then measured on the trained model with `time_train_steps`: the
    median over `pure_epochs` runs of steps-per-epoch back-to-back steps on one
    fixed batch, so both sides span
    seconds and this VM's slow spells hit them alike.
    """
    config = (config or mnist5k_hdge.get_config()).copy_and_resolve_references()
    if epochs < 2:
        raise ValueError(f"epochs must be >= 2 (the first one traces), got {epochs}.")
    config.train.epochs = epochs
    config.train.validate, config.train.select = False, "last"
    config.data.validation_size = 0
    config.train.sample_every_epochs = 0
    config.eval.ood_sets = ()
    batch_size = config.train.batch_size
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as workdir:
        model, _ = training.train_model(config, workdir, extra_callbacks=[timer])
    data = data_lib.build_datasets(config.data, batch_size, seed=config.seed)
    steps = data.steps_per_epoch
    images, labels = random_batch(
        batch_size, data.image_shape, data.num_classes, config.seed
    )
    with precision_policy(config.precision):
        step = time_train_steps(
            model, images, labels, warmup, steps * pure_epochs, timer.counter
        )
    per_step = step["step_seconds"]
    pure = [sum(per_step[i * steps : (i + 1) * steps]) for i in range(pure_epochs)]
    expected = statistics.median(pure)
    epoch_seconds = statistics.median(timer.seconds[1:])
    result = {
        "dataset": data.name,
        "network": config.backbone.name,
        "num_train": data.num_train,
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "epoch_seconds": timer.seconds,
        "epoch_traces": timer.traces,
        "median_step_seconds": step["median_step_seconds"],
        "pure_epoch_seconds": pure,
        "expected_epoch_seconds": expected,
        "median_epoch_seconds": epoch_seconds,
        "ratio": epoch_seconds / expected,
    }
    del model
    gc.collect()
    keras.backend.clear_session()
    return result


# tf.data autotuning ---------------------------------------------------------------


class _FitEndTimer(EpochTimer):
    """Also notes when the last epoch ended (Keras deletes the epoch's iterator
    only after that, when `fit` returns)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.last_epoch_end = time.perf_counter()


def autotune_fit(autotune: bool, config=None, epochs: int = FIT_END_EPOCHS) -> dict:
    """Epoch times of a plain `model.fit` on the mnist5k demo with tf.data
    autotuning on or off, and how long `fit` takes to return after its last
    epoch, when Keras deletes its iterator: with autotuning on, that waits for
    the autotuner's thread, longer the older the iterator is
    (hdge_tf/data/autotune.py). The iterator lives through the whole fit
    (repeated data, `steps_per_epoch`) so that its age is the fit's length."""
    config = (config or mnist5k_hdge.get_config()).copy_and_resolve_references()
    config.data.autotune = autotune
    config.data.validation_size = 0
    keras.utils.set_random_seed(config.seed)
    batch_size = config.train.batch_size
    data = data_lib.build_datasets(config.data, batch_size, seed=config.seed)
    model = training.build_model(config, data.num_classes, data.image_shape)
    steps = data.steps_per_epoch
    model.compile(optimizer=build_optimizer(config.train, steps))
    timer = _FitEndTimer()
    model.fit(
        data.train.repeat(),
        steps_per_epoch=steps,
        epochs=epochs,
        callbacks=[timer],
        verbose=0,
    )
    fit_return = time.perf_counter() - timer.last_epoch_end
    del model
    gc.collect()
    keras.backend.clear_session()
    return {
        "autotune": autotune,
        "epoch_seconds": timer.seconds,
        "fit_return_seconds": fit_return,
    }


# Isolation ------------------------------------------------------------------------


def run_isolated(job: dict) -> dict:
    """Runs `job` (see `run_job`) in a fresh Python process; returns its result.

    A fresh process gives each configuration its own peak RSS and a clean TF state.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        process = subprocess.run(
            [sys.executable, "-m", "hdge_tf.bench", json.dumps(job), str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"Benchmark job {job} failed (exit {process.returncode}):\n"
                f"{process.stderr[-3000:]}"
            )
        return json.loads(out.read_text())


def run_job(job: dict) -> dict:
    """A JSON-able job: {"kind": "configuration", "config": BenchConfig fields,
    "options": TimingOptions fields, "evaluate": bool, "pgd": bool} or
    {"kind": "epoch", "epochs": int, "warmup": int} or
    {"kind": "autotune", "autotune": bool, "epochs": int}."""
    if job["kind"] == "configuration":
        return run_configuration(
            BenchConfig(**job["config"]),
            TimingOptions(**job["options"]),
            evaluate=job["evaluate"],
            pgd=job["pgd"],
        )
    if job["kind"] == "epoch":
        return epoch_overhead(epochs=job["epochs"], warmup=job["warmup"])
    if job["kind"] == "autotune":
        return autotune_fit(job["autotune"], epochs=job["epochs"])
    raise ValueError(f"Unknown benchmark job kind {job['kind']!r}.")


# The whole benchmark ---------------------------------------------------------------


def run_benchmark(
    configs: Sequence[BenchConfig],
    options: TimingOptions = TimingOptions(),
    evaluate: bool = True,
    pgd: bool = True,
    epoch: bool = True,
    isolate: bool = True,
    autotune: bool = True,
) -> dict:
    """Times every configuration (each in a fresh process with `isolate`), then
    the epoch check and `fit` with tf.data autotuning on and off; returns the
    JSON-able report with its `checks`.

    Evaluation and PGD depend on the network and precision, not on the training
    loss, so they run on the first mode of each precision and batch size.
    """
    results, seen = [], set()
    for config in configs:
        group = (config.precision, config.batch_size)
        first = group not in seen
        seen.add(group)
        job = {
            "kind": "configuration",
            "config": dataclasses.asdict(config),
            "options": dataclasses.asdict(options),
            "evaluate": evaluate and first,
            "pgd": pgd and first,
        }
        result = run_isolated(job) if isolate else run_job(job)
        result["isolated"] = isolate
        results.append(result)
        logging.info(
            "%s: %.4f s/step, %.1f images/s, %d trace(s), peak RSS %.0f MB.",
            config.name,
            result["median_step_seconds"],
            result["images_per_second"],
            result["traces"],
            result["peak_rss_train_mb"],
        )
    epoch_result = None
    if epoch:
        job = {
            "kind": "epoch",
            "epochs": EPOCH_CHECK_EPOCHS,
            "warmup": options.warmup,
        }
        epoch_result = run_isolated(job) if isolate else run_job(job)
    autotune_results = []
    if autotune:
        for enabled in (True, False):
            job = {"kind": "autotune", "autotune": enabled, "epochs": FIT_END_EPOCHS}
            autotune_results.append(run_isolated(job) if isolate else run_job(job))
    return {
        "environment": environment(),
        "options": dataclasses.asdict(options),
        "isolated": isolate,
        "configurations": results,
        "epoch": epoch_result,
        "autotune": autotune_results,
        "checks": checks(results, epoch_result),
    }


def environment() -> dict:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
        "cpu_native_bf16": hardware.cpu_has_native_bf16(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# Checks ---------------------------------------------------------------------------


def _check(
    name: str, settings: str, value: float, op: str | None, bound: float | None
) -> dict:
    """A ratio with its target; `op` None means no target at these settings."""
    if op is None:
        passed = None
    elif op == "<=":
        passed = value <= bound
    elif op == ">=":
        passed = value >= bound
    elif op == "<":
        passed = value < bound
    elif op == "within":  # relative to 1
        passed = abs(value - 1.0) <= bound
    else:
        raise ValueError(f"Unknown comparison {op!r}.")
    return {
        "check": name,
        "settings": settings,
        "value": value,
        "op": op,
        "bound": bound,
        "passed": passed,
    }


def _by_setting(results: Iterable[dict], *varying: str) -> dict[tuple, dict]:
    """Results keyed by every configuration field except those in `varying`,
    followed by the values of `varying`, so pairs can be looked up."""
    fields = [f.name for f in dataclasses.fields(BenchConfig) if f.name not in varying]
    index = {}
    for r in results:
        shared = tuple((f, _hashable(r[f])) for f in fields)
        index[(shared, *(r[v] for v in varying))] = r
    return index


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


_SETTING_FORMATS = {
    "mode": "{}",
    "precision": "{}",
    "batch_size": "batch {}",
    "num_classes": "{} classes",
    "queue_size": "K={}",
    "sgld_steps": "{} SGLD steps",
}


def _settings(r: dict, *fields: str) -> str:
    return ", ".join(_SETTING_FORMATS[f].format(r[f]) for f in fields)


def checks(results: Sequence[dict], epoch: dict | None = None) -> list[dict]:
    """The issue's ratios with their targets, from `run_configuration` results
    (and the `epoch_overhead` result). A ratio whose target was stated for other
    settings (K, classes, batch, SGLD steps) is reported without a target."""
    out = []
    by_mode = _by_setting(results, "mode")
    for (shared, mode), hdge in by_mode.items():
        ce = by_mode.get((shared, "ce"))
        if ce is None or mode == "ce":
            continue
        ratio = hdge["median_step_seconds"] / ce["median_step_seconds"]
        if mode == "hdge":
            bound = HDGE_OVER_CE_MAX.get(hdge["num_classes"])
            if hdge["queue_size"] != TARGET_QUEUE_SIZE:
                bound = None
            where = _settings(
                hdge, "precision", "batch_size", "num_classes", "queue_size"
            )
            out.append(
                _check(
                    "hdge_step / ce_step",
                    where,
                    ratio,
                    "<=" if bound else None,
                    bound,
                )
            )
            if ce["isolated"] and hdge["isolated"]:
                extra = hdge["peak_rss_train_mb"] - ce["peak_rss_train_mb"]
                applies = all(hdge[k] == v for k, v in CONTRASTIVE_MB_SETTINGS.items())
                out.append(
                    _check(
                        "contrastive extra peak RSS (MB, hdge - ce)",
                        where,
                        extra,
                        "<" if applies else None,
                        CONTRASTIVE_EXTRA_MB_MAX if applies else None,
                    )
                )
        else:  # jem
            applies = hdge["sgld_steps"] == JEM_SGLD_STEPS
            out.append(
                _check(
                    "jem_step / ce_step (CE steps)",
                    _settings(hdge, "precision", "batch_size", "sgld_steps"),
                    ratio,
                    "<=" if applies else None,
                    JEM_OVER_CE_MAX if applies else None,
                )
            )
    by_precision = _by_setting(results, "precision")
    for (shared, precision), bf16 in by_precision.items():
        fp32 = by_precision.get((shared, "float32"))
        if fp32 is None or precision != "mixed_bfloat16":
            continue
        out.append(
            _check(
                "mixed_bfloat16 / float32 images/s",
                _settings(bf16, "mode", "batch_size"),
                bf16["images_per_second"] / fp32["images_per_second"],
                ">=",
                BF16_SPEEDUP_MIN,
            )
        )
    if epoch is not None:
        out.append(
            _check(
                "hdge-train epoch / (step x steps)",
                f"{epoch['dataset']}, batch {epoch['batch_size']}, "
                f"{epoch['steps_per_epoch']} steps",
                epoch["ratio"],
                "within",
                EPOCH_TOLERANCE,
            )
        )
    return out


# Report ---------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _target(check: dict) -> str:
    if check["op"] is None:
        return "—"
    if check["op"] == "within":
        return f"1 ± {check['bound']:g}"
    return f"{check['op']} {check['bound']:g}"


_BF16_NOTE = {
    True: " with native bfloat16 (AMX/AVX512-BF16)",
    False: " without native bfloat16 (no AMX/AVX512-BF16: bf16 is emulated)",
}


def format_report(report: dict) -> str:
    """Markdown tables: training steps, evaluation and PGD, epoch, checks."""
    results = report["configurations"]
    lines = []
    if results:
        first = results[0]
        shape = "x".join(str(d) for d in first["image_shape"])
        env = report["environment"]
        lines += [
            f"Network {first['network']}, input {shape}, {first['num_classes']} "
            f"classes, K={first['queue_size']}; TF {env['tensorflow']}, "
            f"{env['cpus']} CPUs"
            + _BF16_NOTE.get(env.get("cpu_native_bf16"), "")
            + ("" if report["isolated"] else "; not isolated: RSS is cumulative"),
            "",
        ]
    lines += _table(
        [
            "mode",
            "precision",
            "batch",
            "step ms (median)",
            "images/s",
            "traces",
            "RSS built MB",
            "RSS peak MB",
            "step extra MB",
        ],
        [
            (
                r["mode"],
                r["precision"],
                str(r["batch_size"]),
                f"{1000 * r['median_step_seconds']:.1f}",
                f"{r['images_per_second']:.1f}",
                str(r["traces"]),
                f"{r['peak_rss_build_mb']:.0f}",
                f"{r['peak_rss_train_mb']:.0f}",
                f"{r['step_extra_rss_mb']:.0f}",
            )
            for r in results
        ],
    )
    evaluated = [r for r in results if r["eval"] or r["pgd"]]
    if evaluated:
        lines += [""]
        lines += _table(
            ["precision", "eval images/s (logits + log p(x))", "PGD ms / iteration"],
            [
                (
                    f"{r['precision']} (batch {r['batch_size']})",
                    f"{r['eval']['images_per_second']:.1f}" if r["eval"] else "—",
                    f"{1000 * r['pgd']['iteration_seconds']:.1f}" if r["pgd"] else "—",
                )
                for r in evaluated
            ],
        )
    epoch = report.get("epoch")
    if epoch:
        lines += [
            "",
            f"Epoch check ({epoch['dataset']}): hdge-train epochs "
            f"{', '.join(f'{t:.2f}' for t in epoch['epoch_seconds'])} s, median "
            f"after the first {epoch['median_epoch_seconds']:.2f} s vs "
            f"{epoch['steps_per_epoch']} back-to-back steps on a fixed batch "
            f"{', '.join(f'{t:.2f}' for t in epoch['pure_epoch_seconds'])} s, "
            f"median {epoch['expected_epoch_seconds']:.2f} s (median step "
            f"{1000 * epoch['median_step_seconds']:.1f} ms); traces per epoch "
            f"{epoch['epoch_traces']}.",
        ]
    autotuned = report.get("autotune")
    if autotuned:
        lines += [""]
        lines += _table(
            [
                "tf.data autotune",
                "mnist5k fit epochs (s)",
                "fit returns after (s; iterator deleted)",
            ],
            [
                (
                    "on" if r["autotune"] else "off",
                    ", ".join(f"{t:.2f}" for t in r["epoch_seconds"]),
                    f"{r['fit_return_seconds']:.2f}",
                )
                for r in autotuned
            ],
        )
    if report["checks"]:
        lines += [""]
        lines += _table(
            ["check", "settings", "value", "target", "result"],
            [
                (
                    c["check"],
                    c["settings"],
                    f"{c['value']:.3f}",
                    _target(c),
                    {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]],
                )
                for c in report["checks"]
            ],
        )
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> None:
    path = Path(path)
    if path.parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":  # the child process of `run_isolated`
    _job, _out = json.loads(sys.argv[1]), Path(sys.argv[2])
    _out.write_text(json.dumps(run_job(_job)))
