"""The benchmark suite: each configuration timed (in a fresh process with
`isolate`), then the epoch check and tf.data autotuning on a trainer config passed
in, then the targets checked.

With a PyTorch yardstick (yardstick.py), each float32 Wide ResNet configuration is
preceded by the yardstick's run at the same settings, and with several `rounds`
the whole list runs again (torch, ours, torch, ours, ...; then round 2), so a
ratio is taken between neighbours in time and its spread over rounds is known.

A fresh process per configuration gives each its own peak RSS and a clean TF state:
`run_isolated` runs the job (see `run_job`) there with `hdge_tf.process_runner`,
which pickles it, so a trainer config reaches it exactly (tuples, types).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from hdge_tf import cpu_kernels, hardware
from hdge_tf.bench.config import BenchConfig, TimingOptions, build_model
from hdge_tf.bench.epochs import (
    EPOCH_CHECK_EPOCHS,
    FIT_END_EPOCHS,
    autotune_fit,
    epoch_overhead,
)
from hdge_tf.bench.flops import (
    MATMUL_SIZE,
    ForwardCost,
    forward_multiply_adds,
    matmul_gflops,
    sgld_chain_flops,
    step_flops,
)
from hdge_tf.bench.targets import checks
from hdge_tf.bench.timing import (
    peak_rss_mb,
    random_batch,
    release_models,
    time_evaluation,
    time_pgd,
    time_sgld_chain,
    time_train_steps,
)
from hdge_tf.bench.yardstick import TorchYardstick
from hdge_tf.hardware import precision_policy
from hdge_tf.process_runner import DONE, Call, Task, run_tasks

_DEFAULT_TIMING = TimingOptions()  # frozen, so one instance serves every call


def run_configuration(
    config: BenchConfig,
    base_config: ml_collections.ConfigDict,
    options: TimingOptions = _DEFAULT_TIMING,
    evaluate: bool = False,
    pgd: bool = False,
    seed: int = 0,
) -> dict:
    """Times one configuration (on top of the trainer config `base_config`, see
    `BenchConfig.model_config`) in this process.

    Returns the configuration's fields plus the train-step timing, peak RSS after
    building (`peak_rss_build_mb`) and after the timed steps (`peak_rss_train_mb`),
    and with `evaluate`/`pgd` the `eval`/`pgd` timings. Also the step's FLOPs
    (`gflop_per_step`, see `flops.step_flops`) and rate (`gflops`), and the
    matmul GFLOP/s measured right after the timed steps, in this process, to read
    that rate against (`matmul_gflops_float32`; `matmul_gflops_bfloat16` too
    under mixed_bfloat16). A jem configuration also times its SGLD chain alone
    (`sgld_chain_seconds`, `time_sgld_chain`) on a batch of uniform noise.
    """
    keras.utils.set_random_seed(seed)
    logging.info("Benchmarking %s (%s).", config.name, config.network)
    images, labels = random_batch(
        config.batch_size, config.image_shape, config.num_classes, seed
    )
    result = dataclasses.asdict(config)
    result["model_queue_size"] = config.model_kwargs()["queue_size"]
    with precision_policy(config.precision):
        model = build_model(config, base_config, seed)
        result["jit_compile"] = bool(model.step_jit_compile)  # as resolved
        result["peak_rss_build_mb"] = peak_rss_mb()
        result.update(
            time_train_steps(model, images, labels, options.warmup, options.repeats)
        )
        result["peak_rss_train_mb"] = peak_rss_mb()
        result["step_extra_rss_mb"] = (
            result["peak_rss_train_mb"] - result["peak_rss_build_mb"]
        )
        result.update(_matmul_rates(config.precision, options))
        cost = forward_multiply_adds(model)
        result.update(_step_rates(cost, config, result["median_step_seconds"]))
        if config.mode == "jem":
            starts, _ = random_batch(
                config.batch_size, config.image_shape, config.num_classes, seed + 2
            )
            result.update(
                time_sgld_chain(
                    model, starts, config.sgld_steps, 1, options.sgld_repeats
                )
            )
            gflop = sgld_chain_flops(cost, config.batch_size, config.sgld_steps) / 1e9
            result["sgld_chain_gflop"] = gflop
            result["sgld_chain_gflops"] = gflop / result["sgld_chain_seconds"]
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
    release_models()
    return result


def _matmul_rates(precision: str, options: TimingOptions) -> dict:
    """Matmul GFLOP/s in float32, and in bfloat16 for a bfloat16 policy."""
    dtypes = ["float32"] + (["bfloat16"] if "bfloat16" in precision else [])
    return {
        f"matmul_gflops_{dtype}": matmul_gflops(
            dtype, options.matmul_size, options.matmul_repeats
        )
        for dtype in dtypes
    }


def _step_rates(
    cost: ForwardCost, config: BenchConfig, median_step_seconds: float
) -> dict:
    """The step's multiply-adds (per example), FLOPs and achieved GFLOP/s."""
    gflop = step_flops(cost, config.mode, config.batch_size, config.sgld_steps) / 1e9
    return {
        "forward_multiply_adds": cost.multiply_adds,
        "input_multiply_adds": cost.input_multiply_adds,
        "gflop_per_step": gflop,
        "gflops": gflop / median_step_seconds,
    }


def run_job(job: dict) -> dict:
    """Runs a job in this process: {"kind": "configuration", "config":
    BenchConfig fields, "base_config": trainer ConfigDict, "options":
    TimingOptions fields, "evaluate": bool, "pgd": bool}, {"kind": "epoch",
    "config": trainer ConfigDict, "epochs": int,
    "warmup": int} or {"kind": "autotune", "config": trainer ConfigDict,
    "autotune": bool, "epochs": int}."""
    if job["kind"] == "configuration":
        return run_configuration(
            BenchConfig(**job["config"]),
            job["base_config"],
            TimingOptions(**job["options"]),
            evaluate=job["evaluate"],
            pgd=job["pgd"],
        )
    if job["kind"] == "epoch":
        return epoch_overhead(job["config"], epochs=job["epochs"], warmup=job["warmup"])
    if job["kind"] == "autotune":
        return autotune_fit(job["autotune"], job["config"], epochs=job["epochs"])
    raise ValueError(f"Unknown benchmark job kind {job['kind']!r}.")


def run_isolated(job: dict) -> dict:
    """Runs `job` (see `run_job`) in a fresh Python process; returns its result as
    JSON has it (tuples as lists)."""
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "job.log"
        task = Task("job", Call(run_job, (job,)), env=env, log=log)
        outcome = run_tasks([task])["job"]
        if outcome.status != DONE:
            # A trainer config would fill the screen; its job's kind says which.
            shown = {
                k: v
                for k, v in job.items()
                if not isinstance(v, ml_collections.ConfigDict)
            }
            output = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(
                f"Benchmark job {shown} failed (exit {outcome.exit_code}):\n"
                f"{output[-3000:]}"
            )
        return json.loads(json.dumps(outcome.result))


def run_benchmark(
    configs: Sequence[BenchConfig],
    options: TimingOptions = _DEFAULT_TIMING,
    evaluate: bool = True,
    pgd: bool = True,
    epoch: bool = True,
    isolate: bool = True,
    autotune: bool = True,
    fit_config: ml_collections.ConfigDict | None = None,
    torch: TorchYardstick | None = None,
    rounds: int = 1,
    base_config: ml_collections.ConfigDict | None = None,
) -> dict:
    """Times every configuration (each in a fresh process with `isolate`) on top
    of `base_config` (a trainer config; hdge-bench passes configs/base.py's), then
    the epoch check and `fit` with tf.data autotuning on and off, both on
    `fit_config` (a trainer config; hdge-bench passes configs/mnist5k_hdge.py);
    returns the JSON-able report with its `checks`.

    Evaluation and PGD depend on the network and precision, not on the training
    loss, so they run on the first mode of each precision and batch size, in the
    first round. With `torch`, the yardstick runs right before each configuration
    it applies to (`TorchYardstick.applies`) and its result is the
    configuration's `torch` entry; `rounds` repeats the list, each result noting
    its `round` (1, 2, ...), and each check is then the mean over rounds.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    if torch is not None and not any(torch.applies(c) for c in configs):
        raise ValueError(
            "The PyTorch yardstick times a float32 Wide ResNet: add float32 to the "
            "precisions and use a wrn-DEPTH-WIDTH network, or drop the yardstick."
        )
    if configs and base_config is None:
        raise ValueError(
            "Timing a configuration builds the trainer's model: pass base_config "
            "(a trainer config whose defaults the configurations change, e.g. "
            "hdge_tf.configs.base.get_config())."
        )
    if (epoch or autotune) and fit_config is None:
        raise ValueError(
            "The epoch check and the autotuning comparison train a model: pass "
            "fit_config (e.g. hdge_tf.configs.mnist5k_hdge.get_config()), or "
            "epoch=False, autotune=False."
        )
    run = run_isolated if isolate else run_job
    results, seen = [], set()
    for round_ in range(1, rounds + 1):
        for config in configs:
            group = (config.precision, config.batch_size)
            first = round_ == 1 and group not in seen
            seen.add(group)
            job = {
                "kind": "configuration",
                "config": dataclasses.asdict(config),
                "base_config": base_config,
                "options": dataclasses.asdict(options),
                "evaluate": evaluate and first,
                "pgd": pgd and first,
            }
            yardstick = None
            if torch is not None and torch.applies(config):
                yardstick = torch.run(config, options)
            result = run(job)
            result.update(isolated=isolate, round=round_, torch=yardstick)
            results.append(result)
            logging.info(
                "Round %d, %s: %.4f s/step (%.1f GFLOP/s), %.1f images/s, %d "
                "trace(s), peak RSS %.0f MB%s.",
                round_,
                config.name,
                result["median_step_seconds"],
                result["gflops"],
                result["images_per_second"],
                result["traces"],
                result["peak_rss_train_mb"],
                f"; PyTorch CE step {yardstick['ce_step_s']:.4f} s"
                if yardstick
                else "",
            )
    epoch_result = None
    if epoch:
        epoch_result = run(
            {
                "kind": "epoch",
                "config": fit_config,
                "epochs": EPOCH_CHECK_EPOCHS,
                "warmup": options.warmup,
            }
        )
    autotune_results = [
        run(
            {
                "kind": "autotune",
                "config": fit_config,
                "autotune": enabled,
                "epochs": FIT_END_EPOCHS,
            }
        )
        for enabled in ((True, False) if autotune else ())
    ]
    return {
        "environment": environment(options.matmul_size, options.matmul_repeats),
        "options": dataclasses.asdict(options),
        "isolated": isolate,
        "rounds": rounds,
        "torch": dataclasses.asdict(torch) if torch else None,
        "configurations": results,
        "epoch": epoch_result,
        "autotune": autotune_results,
        "checks": checks(results, epoch_result),
    }


def environment(matmul_size: int = MATMUL_SIZE, matmul_repeats: int = 5) -> dict:
    """Versions and hardware, to read the numbers against, with the host's float32
    and bfloat16 matmul GFLOP/s (`flops.matmul_gflops`) measured in this process."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
        "cpu_model": hardware.cpu_model(),
        "cpu_native_bf16": hardware.cpu_has_native_bf16(),
        "onednn": cpu_kernels.onednn_enabled(),
        **{
            f"matmul_gflops_{dtype}": matmul_gflops(dtype, matmul_size, matmul_repeats)
            for dtype in ("float32", "bfloat16")
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
