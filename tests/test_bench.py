"""The benchmark's machinery on tiny settings: inputs, timings, trace counts, checks,
the CLI. Speed targets are the benchmark's business, not the tests'."""

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import smoke_config

from hdge_tf import bench

TINY = {
    "network": "small_cnn",
    "num_classes": 4,
    "batch_size": 8,
    "image_shape": (8, 8, 3),
    "queue_size": 32,
    "sgld_steps": 2,
    "replay_buffer_size": 64,
}
FAST = bench.TimingOptions(
    warmup=2, repeats=2, eval_images=16, eval_batch_size=8, eval_repeats=1, pgd_steps=2
)


def test_random_batch_is_uniform_noise_in_range():
    images, labels = bench.random_batch(256, (8, 8, 3), 10, seed=1)
    assert images.shape == (256, 8, 8, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    # Uniform on [-1, 1]: std 1/sqrt(3), mean 0, and it fills the range.
    assert images.std() == pytest.approx(1 / np.sqrt(3), abs=0.01)
    assert abs(images.mean()) < 0.01
    assert images.min() < -0.99 and images.max() > 0.99
    assert labels.dtype == np.int32 and set(labels) == set(range(10))
    again, _ = bench.random_batch(256, (8, 8, 3), 10, seed=1)
    np.testing.assert_array_equal(images, again)


def test_networks_and_modes_map_to_model_arguments():
    assert bench.parse_network("wrn-16-4") == ("wrn", {"depth": 16, "width": 4})
    assert bench.parse_network("wrn-28-10") == ("wrn", {"depth": 28, "width": 10})
    assert bench.parse_network("small_cnn")[0] == "small_cnn"
    with pytest.raises(ValueError, match="wrn-DEPTH-WIDTH"):
        bench.parse_network("resnet50")
    with pytest.raises(ValueError, match="mode"):
        bench.BenchConfig(mode="sgld")

    ce = bench.BenchConfig(mode="ce", batch_size=64)
    assert ce.model_kwargs() == {"pxy_contrast_weight": 0.0, "queue_size": 64}
    assert bench.BenchConfig(mode="hdge").model_kwargs() == {
        "pxy_contrast_weight": 1.0,
        "queue_size": 65536,
    }
    jem = bench.build_model(bench.BenchConfig(mode="jem", **TINY))
    assert jem.loss_weights_["pxy_contrast"] == 1.0
    assert jem.loss_weights_["px_sgld"] == 1.0 and jem.sgld_steps == 2
    assert jem.queue.size == 32 and jem.replay_buffer.size == 64
    assert jem.image_shape == (8, 8, 3) and jem.num_classes == 4

    settings = {k: v for k, v in TINY.items() if k != "batch_size"}
    grid = bench.configurations(["ce", "hdge"], ["float32"], [8, 16], **settings)
    assert [c.name for c in grid] == [
        "ce/float32/b8",
        "hdge/float32/b8",
        "ce/float32/b16",
        "hdge/float32/b16",
    ]


@pytest.mark.parametrize("mode", bench.MODES)
def test_configuration_times_steps_without_retracing(mode):
    config = bench.BenchConfig(mode=mode, **TINY)
    result = bench.run_configuration(config, FAST, evaluate=True, pgd=True)
    assert (result["mode"], result["batch_size"]) == (mode, 8)
    assert len(result["step_seconds"]) == 2 and min(result["step_seconds"]) > 0
    median = result["median_step_seconds"]
    assert median == pytest.approx(np.median(result["step_seconds"]))
    assert result["images_per_second"] == pytest.approx(8 / median)
    # 2 warm-up + 2 timed steps, one trace.
    assert result["traces"] == 1 and result["retraces_while_timing"] == 0
    assert result["peak_rss_train_mb"] >= result["peak_rss_build_mb"] > 0
    assert result["model_queue_size"] == (8 if mode == "ce" else 32)

    evaluation = result["eval"]
    assert evaluation["images"] == 16 and evaluation["median_seconds"] > 0
    assert evaluation["images_per_second"] == pytest.approx(
        16 / evaluation["median_seconds"]
    )
    pgd = result["pgd"]
    assert pgd["batch_size"] == 8 and pgd["steps"] == 2
    assert pgd["iteration_seconds"] == pytest.approx(pgd["median_call_seconds"] / 2)
    assert pgd["iteration_seconds"] > 0


def test_mixed_precision_policy_is_restored():
    config = bench.BenchConfig(mode="hdge", precision="mixed_bfloat16", **TINY)
    options = dataclasses.replace(FAST, eval_images=0, pgd_steps=0)
    result = bench.run_configuration(config, options, evaluate=True, pgd=True)
    assert result["traces"] == 1 and result["images_per_second"] > 0
    assert result["eval"] is None and result["pgd"] is None
    assert keras.mixed_precision.global_policy().name == "float32"


def test_trace_counter_sees_a_retrace():
    config = bench.BenchConfig(mode="hdge", **TINY)
    model = bench.build_model(config)
    counter = bench.TraceCounter(model)
    first = bench.time_train_steps(
        model, *bench.random_batch(8, (8, 8, 3), 4), 1, 3, counter
    )
    assert first["traces"] == 1
    # Another batch size is another input signature.
    second = bench.time_train_steps(
        model, *bench.random_batch(4, (8, 8, 3), 4), 1, 2, counter
    )
    assert second["traces"] == 2 and second["retraces_while_timing"] == 0
    assert second["images_per_second"] == pytest.approx(
        4 / second["median_step_seconds"]
    )
    with pytest.raises(ValueError, match="before the train function"):
        bench.TraceCounter(model)


def _result(mode, precision="float32", seconds=1.0, rss=1000.0, **settings):
    fields = dataclasses.asdict(bench.BenchConfig(mode=mode, precision=precision))
    fields.update(settings)
    return fields | {
        "median_step_seconds": seconds,
        "images_per_second": fields["batch_size"] / seconds,
        "peak_rss_train_mb": rss,
        "isolated": True,
    }


def _by_name(checks):
    return {(c["check"], c["settings"]): c for c in checks}


def test_checks_compute_ratios_against_targets():
    results = [
        _result("ce", seconds=0.100, rss=1000),
        _result("hdge", seconds=0.102, rss=1300),
        _result("jem", seconds=1.700),
        _result("ce", "mixed_bfloat16", seconds=0.030),
        _result("hdge", "mixed_bfloat16", seconds=0.050),
    ]
    epoch = {"dataset": "mnist5k", "batch_size": 64, "steps_per_epoch": 63}
    checks = bench.checks(results, epoch | {"ratio": 1.08})
    by_name = _by_name(checks)

    hdge = by_name[("hdge_step / ce_step", "float32, batch 64, 10 classes, K=65536")]
    assert hdge["value"] == pytest.approx(1.02)
    assert (hdge["op"], hdge["bound"], hdge["passed"]) == ("<=", 1.03, True)
    bf16_hdge = by_name[
        ("hdge_step / ce_step", "mixed_bfloat16, batch 64, 10 classes, K=65536")
    ]
    assert bf16_hdge["value"] == pytest.approx(5 / 3) and bf16_hdge["passed"] is False

    jem = by_name[("jem_step / ce_step (CE steps)", "float32, batch 64, 20 SGLD steps")]
    assert jem["value"] == pytest.approx(17.0) and jem["passed"] is False

    memory = by_name[
        (
            "contrastive extra peak RSS (MB, hdge - ce)",
            "float32, batch 64, 10 classes, K=65536",
        )
    ]
    # The 200 MB target is for 100 classes and batch 256 only.
    assert memory["value"] == pytest.approx(300) and memory["passed"] is None

    speedup = by_name[("mixed_bfloat16 / float32 images/s", "ce, batch 64")]
    assert speedup["value"] == pytest.approx(0.1 / 0.03) and speedup["passed"]
    slow = by_name[("mixed_bfloat16 / float32 images/s", "hdge, batch 64")]
    assert slow["value"] == pytest.approx(0.102 / 0.05) and slow["passed"] is False

    fit = by_name[("hdge-train epoch / (step x steps)", "mnist5k, batch 64, 63 steps")]
    assert fit["passed"] and fit["bound"] == 0.10
    for ratio, passed in [(1.12, False), (0.85, False), (0.95, True)]:
        assert bench.checks([], epoch | {"ratio": ratio})[0]["passed"] is passed
    assert len(checks) == 8


def test_checks_apply_each_target_at_its_settings():
    c100 = {"num_classes": 100, "batch_size": 256}
    checks = _by_name(
        bench.checks(
            [
                _result("ce", seconds=1.0, rss=2000, **c100),
                _result("hdge", seconds=1.08, rss=2150, **c100),
            ]
        )
    )
    where = "float32, batch 256, 100 classes, K=65536"
    hdge = checks[("hdge_step / ce_step", where)]
    assert (hdge["bound"], hdge["passed"]) == (1.10, True)
    memory = checks[("contrastive extra peak RSS (MB, hdge - ce)", where)]
    assert memory["value"] == pytest.approx(150)
    assert (memory["op"], memory["bound"], memory["passed"]) == ("<", 200.0, True)

    # Other K or SGLD steps: reported, no target; no memory check without isolation.
    small = {"queue_size": 1024, "sgld_steps": 5}
    checks = bench.checks(
        [
            _result("ce", **small) | {"isolated": False},
            _result("hdge", seconds=2.0, **small),
            _result("jem", seconds=3.0, **small),
        ]
    )
    assert [(c["check"], c["value"], c["passed"]) for c in checks] == [
        ("hdge_step / ce_step", 2.0, None),
        ("jem_step / ce_step (CE steps)", 3.0, None),
    ]


def test_report_table_lists_configurations_and_verdicts():
    results = [
        _result("ce", seconds=0.1) | {"peak_rss_build_mb": 900.0, "traces": 1},
        _result("hdge", seconds=0.2) | {"peak_rss_build_mb": 950.0, "traces": 1},
    ]
    for r in results:
        r.update(step_extra_rss_mb=r["peak_rss_train_mb"] - r["peak_rss_build_mb"])
        r.update(eval=None, pgd=None)
    report = {
        "environment": {"tensorflow": "2.x", "cpus": 2},
        "isolated": True,
        "configurations": results,
        "epoch": None,
        "checks": bench.checks(results),
    }
    text = bench.format_report(report)
    assert "| ce | float32 | 64 | 100.0 | 640.0 | 1 | 900 | 1000 | 100 |" in text
    assert "| hdge | float32 | 64 | 200.0 | 320.0 | 1 | 950 | 1000 | 50 |" in text
    assert "| 2.000 | <= 1.03 | FAIL |" in text


def _tiny_mnist5k(num_train: int):
    """The smoke run on `num_train` images (the bench holds none out)."""
    config = smoke_config()
    config.data.limit_train = num_train
    return config


def test_epoch_overhead_on_a_tiny_mnist5k_fit():
    config = _tiny_mnist5k(96)
    result = bench.epoch_overhead(config, epochs=3, warmup=1, pure_epochs=2)
    assert (result["num_train"], result["steps_per_epoch"]) == (96, 3)
    assert len(result["epoch_seconds"]) == 3 and min(result["epoch_seconds"]) > 0
    # The first epoch traces; the measured ones must not.
    assert result["epoch_traces"][0] >= 1 and result["epoch_traces"][1:] == [0, 0]
    # Pure epochs: two runs of 3 back-to-back fixed-batch steps; median of two.
    assert result["expected_epoch_seconds"] == pytest.approx(
        result["pure_epoch_seconds"][0] / 2 + result["pure_epoch_seconds"][1] / 2
    )
    assert result["median_step_seconds"] < max(result["pure_epoch_seconds"])
    later = sorted(result["epoch_seconds"][1:])
    assert result["median_epoch_seconds"] == pytest.approx(sum(later) / 2)
    assert result["ratio"] == pytest.approx(
        result["median_epoch_seconds"] / result["expected_epoch_seconds"]
    )


def test_autotune_fit_times_epochs_and_the_return_of_fit():
    config = _tiny_mnist5k(64)
    result = bench.autotune_fit(False, config, epochs=2)
    assert result["autotune"] is False and len(result["epoch_seconds"]) == 2
    assert 0 <= result["fit_return_seconds"] < min(result["epoch_seconds"])
    report = {
        "configurations": [],
        "checks": [],
        "isolated": True,
        "autotune": [
            {"autotune": True, "epoch_seconds": [7.1, 9.4], "fit_return_seconds": 33.8},
            result,
        ],
    }
    text = bench.format_report(report)
    assert "| on | 7.10, 9.40 | 33.80 |" in text
    assert "| off | " in text


@pytest.mark.slow
def test_isolated_configuration_reports_its_own_memory():
    job = {
        "kind": "configuration",
        "config": dataclasses.asdict(bench.BenchConfig(mode="hdge", **TINY)),
        "options": dataclasses.asdict(FAST),
        "evaluate": False,
        "pgd": False,
    }
    result = bench.run_isolated(job)
    assert result["traces"] == 1 and result["image_shape"] == [8, 8, 3]
    # A fresh process that imported TensorFlow: hundreds of MB, not our total.
    assert 100 < result["peak_rss_build_mb"] <= result["peak_rss_train_mb"]
    assert result["images_per_second"] == pytest.approx(
        8 / result["median_step_seconds"]
    )


@pytest.mark.slow
def test_cli_writes_json_with_every_configuration(tmp_path):
    output = tmp_path / "bench.json"
    flags = [
        "--network=small_cnn",
        "--image_size=8",
        "--classes=4",
        "--batch_sizes=8",
        "--queue_size=32",
        "--sgld_steps=2",
        "--modes=ce,hdge,jem",
        "--precisions=float32",
        "--warmup=1",
        "--repeats=2",
        "--eval_images=16",
        "--eval_batch_size=8",
        "--eval_repeats=1",
        "--pgd_steps=1",
        "--noepoch",
        "--noautotune",
        "--noisolate",
        f"--output={output}",
    ]
    process = subprocess.run(
        [sys.executable, "-m", "hdge_tf.bin.hdge_bench", *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(output.read_text())
    configs = report["configurations"]
    assert [(c["mode"], c["precision"], c["batch_size"]) for c in configs] == [
        ("ce", "float32", 8),
        ("hdge", "float32", 8),
        ("jem", "float32", 8),
    ]
    assert all(c["traces"] == 1 and c["network"] == "small_cnn" for c in configs)
    # Evaluation and PGD run once per precision and batch, on the first mode.
    assert configs[0]["eval"]["images"] == 16 and configs[0]["pgd"]["steps"] == 1
    assert configs[1]["eval"] is None and configs[2]["pgd"] is None
    assert report["epoch"] is None and report["isolated"] is False
    assert report["autotune"] == []
    assert [c["check"] for c in report["checks"]] == [
        "hdge_step / ce_step",
        "jem_step / ce_step (CE steps)",
    ]
    assert "| jem | float32 | 8 |" in process.stdout
