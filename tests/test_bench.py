"""The benchmark's machinery on tiny settings: inputs, timings, trace counts, checks,
the CLI. Speed targets are the benchmark's business, not the tests'."""

import dataclasses
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import smoke_config

from hdge_tf import bench, networks
from hdge_tf.bench import suite
from hdge_tf.bin import cli, hdge_bench
from hdge_tf.configs import base

BASE = base.get_config()  # the trainer config every configuration changes

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
    warmup=2,
    repeats=2,
    eval_images=16,
    eval_batch_size=8,
    eval_repeats=1,
    pgd_steps=2,
    sgld_repeats=2,
    matmul_size=64,
    matmul_repeats=1,
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
    jem = bench.build_model(bench.BenchConfig(mode="jem", **TINY), BASE)
    assert jem.loss_weights["pxy_contrast"] == 1.0
    assert jem.loss_weights["px_sgld"] == 1.0 and jem.sgld.steps == 2
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
    result = bench.run_configuration(config, BASE, FAST, evaluate=True, pgd=True)
    assert (result["mode"], result["batch_size"]) == (mode, 8)
    assert len(result["step_seconds"]) == 2 and min(result["step_seconds"]) > 0
    median = result["median_step_seconds"]
    assert median == pytest.approx(np.median(result["step_seconds"]))
    assert result["images_per_second"] == pytest.approx(8 / median)
    # 2 warm-up + 2 timed steps, one trace.
    assert result["traces"] == 1 and result["retraces_while_timing"] == 0
    assert result["peak_rss_train_mb"] >= result["peak_rss_build_mb"] > 0
    assert result["model_queue_size"] == (8 if mode == "ce" else 32)

    cost = bench.ForwardCost(
        result["forward_multiply_adds"], result["input_multiply_adds"]
    )
    assert cost.multiply_adds > cost.input_multiply_adds > 0
    assert result["gflop_per_step"] == pytest.approx(
        bench.step_flops(cost, mode, 8, 2) / 1e9
    )
    assert result["gflops"] == pytest.approx(result["gflop_per_step"] / median)
    assert result["matmul_gflops_float32"] > 0
    assert "matmul_gflops_bfloat16" not in result
    if mode == "jem":
        assert len(result["sgld_chain_call_seconds"]) == 2
        chain = result["sgld_chain_seconds"]
        assert chain == pytest.approx(np.median(result["sgld_chain_call_seconds"]))
        assert result["sgld_step_seconds"] == pytest.approx(chain / 2)
        assert result["sgld_chain_gflop"] == pytest.approx(
            bench.sgld_chain_flops(cost, 8, 2) / 1e9
        )
        assert result["sgld_chain_gflops"] == pytest.approx(
            result["sgld_chain_gflop"] / chain
        )
    else:
        assert "sgld_chain_seconds" not in result

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
    result = bench.run_configuration(config, BASE, options, evaluate=True, pgd=True)
    assert result["traces"] == 1 and result["images_per_second"] > 0
    assert result["eval"] is None and result["pgd"] is None
    assert result["matmul_gflops_float32"] > 0 and result["matmul_gflops_bfloat16"] > 0
    assert keras.mixed_precision.global_policy().name == "float32"


def test_trace_counter_sees_a_retrace():
    config = bench.BenchConfig(mode="hdge", **TINY)
    model = bench.build_model(config, BASE)
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


def _tiny_conv_net() -> keras.Model:
    """Input 8x8x3 -> rescaling (no weights) -> 3x3 conv to 4 (valid, 6x6) ->
    grouped strided 3x3 conv to 6 (2 groups, same, 3x3) -> flatten -> dense 5."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(0.5)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", groups=2)(x)
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_forward_multiply_adds_of_a_hand_built_model():
    first = 6 * 6 * (3 * 3 * 3) * 4  # reads the input: rescaling has no weights
    grouped = 3 * 3 * (3 * 3 * 2) * 6  # cin / groups = 2
    dense = (3 * 3 * 6) * 5
    net = _tiny_conv_net()
    assert bench.forward_multiply_adds(net) == bench.ForwardCost(
        first + grouped + dense, first
    )
    # Nested in another functional model, and in a Sequential.
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, keras.layers.Dense(2)(net(inputs)))
    assert bench.forward_multiply_adds(outer) == bench.ForwardCost(
        first + grouped + dense + 5 * 2, first
    )
    stacked = keras.Sequential([keras.Input((8, 8, 3)), net, keras.layers.Dense(2)])
    assert bench.forward_multiply_adds(stacked).input_multiply_adds == first
    with pytest.raises(ValueError, match="not built"):
        bench.forward_multiply_adds(keras.Sequential([keras.layers.Dense(3)]))


def test_forward_multiply_adds_of_a_published_wide_resnet():
    def conv(size, kernel, cin, cout):  # multiply-adds of a conv with size² outputs
        return size * size * kernel * kernel * cin * cout

    # WRN-10-1: one block per group of 16, 32, 64 channels on 32x32x3. The
    # published layout strides a group's second conv, so its first runs at the
    # group's input resolution; the 1x1 shortcut strides.
    stem = conv(32, 3, 3, 16)
    group1 = 2 * conv(32, 3, 16, 16)  # no shortcut conv: same width, stride 1
    group2 = conv(32, 3, 16, 32) + conv(16, 3, 32, 32) + conv(16, 1, 16, 32)
    group3 = conv(16, 3, 32, 64) + conv(8, 3, 64, 64) + conv(8, 1, 32, 64)
    expected = bench.ForwardCost(stem + group1 + group2 + group3 + 64 * 10, stem)
    wrn = networks.WideResNet(10, depth=10, width=1)
    assert bench.forward_multiply_adds(wrn) == expected
    # The trainer's model wraps it (HDGEClassifier -> backbone): the same count.
    model = bench.build_model(
        bench.BenchConfig(mode="ce", network="wrn-10-1", batch_size=8), BASE
    )
    assert bench.forward_multiply_adds(model) == expected


def test_step_flops_per_mode():
    cost = bench.ForwardCost(multiply_adds=100, input_multiply_adds=10)
    # Training pass: forward 100 + weight gradients 100 + input gradients 90.
    assert cost.training_pass == 290 and cost.sgld_step == 200
    assert bench.step_flops(cost, "ce", 8) == 2 * 8 * 290
    assert bench.step_flops(cost, "hdge", 8, sgld_steps=5) == 2 * 8 * 290
    # jem: the data pass, the samples' pass and 5 steps of forward + input grads.
    assert bench.step_flops(cost, "jem", 8, 5) == 2 * 8 * (290 + 290 + 5 * 200)
    assert bench.sgld_chain_flops(cost, 8, 5) == 2 * 8 * 5 * 200
    with pytest.raises(ValueError, match="mode"):
        bench.step_flops(cost, "sgld", 8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_gflops_is_a_positive_rate(dtype):
    rate = bench.matmul_gflops(dtype, size=128, repeats=2)
    assert np.isfinite(rate) and rate > 0


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


def test_checks_of_flop_rates_and_the_sgld_chain():
    matmul = {"matmul_gflops_float32": 75.0}
    results = [
        _result("ce", seconds=0.5) | {"gflops": 60.0} | matmul,
        _result("jem", seconds=9.0) | {"sgld_chain_seconds": 6.0},
        _result("ce", "mixed_bfloat16", seconds=0.2) | {"gflops": 150.0} | matmul,
        _result("ce", network="small_cnn") | {"gflops": 1.5} | matmul,
    ]
    by_name = _by_name(bench.checks(results))
    flops = by_name[("ce_step GFLOP/s / matmul GFLOP/s", "wrn-16-4, float32, batch 64")]
    assert flops["value"] == pytest.approx(0.8)
    assert (flops["op"], flops["bound"], flops["passed"]) == (">=", 0.75, True)
    # A small CNN is reported without the Wide ResNet's target; bf16 not at all.
    small = by_name[
        ("ce_step GFLOP/s / matmul GFLOP/s", "small_cnn, float32, batch 64")
    ]
    assert small["value"] == pytest.approx(0.02) and small["passed"] is None
    assert not [k for k in by_name if "GFLOP" in k[0] and "bfloat16" in k[1]]

    where = "float32, batch 64, 20 SGLD steps"
    chain = by_name[("sgld_chain / ce_step (CE steps)", where)]
    assert chain["value"] == pytest.approx(12.0)
    assert (chain["op"], chain["bound"], chain["passed"]) == ("<=", 13.5, True)
    # The whole jem step is still checked, against its own target.
    step = by_name[("jem_step / ce_step (CE steps)", where)]
    assert step["value"] == pytest.approx(18.0) and step["passed"] is False

    five = {"sgld_steps": 5}
    chain = bench.checks(
        [
            _result("ce", seconds=0.5, **five),
            _result("jem", seconds=9.0, **five) | {"sgld_chain_seconds": 7.0},
        ]
    )[1]
    assert chain["check"] == "sgld_chain / ce_step (CE steps)"
    assert chain["value"] == pytest.approx(14.0) and chain["passed"] is None


def test_report_table_lists_configurations_and_verdicts():
    rates = {"gflops": 50.0, "matmul_gflops_float32": 80.0}
    results = [
        _result("ce", seconds=0.1) | {"peak_rss_build_mb": 900.0, "traces": 1},
        _result("hdge", seconds=0.2) | {"peak_rss_build_mb": 950.0, "traces": 1},
        _result("jem", seconds=2.0) | {"peak_rss_build_mb": 990.0, "traces": 1},
    ]
    results[0].update(rates)
    results[2].update(
        sgld_chain_seconds=1.5,
        sgld_step_seconds=0.075,
        sgld_chain_gflops=40.0,
        matmul_gflops_float32=80.0,
    )
    for r in results:
        r.update(step_extra_rss_mb=r["peak_rss_train_mb"] - r["peak_rss_build_mb"])
        r.update(eval=None, pgd=None)
    report = {
        "environment": {
            "tensorflow": "2.x",
            "cpus": 2,
            "matmul_gflops_float32": 81.25,
            "matmul_gflops_bfloat16": 12.5,
        },
        "isolated": True,
        "configurations": results,
        "epoch": None,
        "checks": bench.checks(results),
    }
    text = bench.format_report(report)
    assert "Matmul 81.2 GFLOP/s float32, 12.5 GFLOP/s bfloat16" in text
    assert (
        "| ce | float32 | 64 | 100.0 | 640.0 | 50.0 | 62 | 1 | 900 | 1000 | 100 |"
        in text
    )
    # A result without FLOP figures (an older report) shows dashes.
    assert (
        "| hdge | float32 | 64 | 200.0 | 320.0 | — | — | 1 | 950 | 1000 | 50 |" in text
    )
    assert "| float32 | 64 | 20 | 1.50 | 75.0 | 40.0 | 50 |" in text
    assert "| 2.000 | <= 1.03 | FAIL |" in text
    assert "PyTorch" not in text and "round" not in text


_FAKE_YARDSTICK = """
import json, sys
with open({log!r}, "a") as log:
    log.write("torch " + " ".join(sys.argv[1:]) + "\\n")
if {fail!r}:
    sys.exit("no torch here")
out = {{"ce_step_s": 0.5, "torch": "fake"}}
if any(a.startswith("--sgld=") for a in sys.argv):
    out["sgld_chain_s"] = 4.0
print("a line of chatter")
print(json.dumps(out))
"""


def _fake_yardstick(tmp_path, fail=False) -> tuple[bench.TorchYardstick, object]:
    """A yardstick that logs its arguments and prints fixed times (CE step 0.5 s,
    SGLD chain 4.0 s), run by this interpreter; and its log file."""
    log = tmp_path / "order.log"
    script = tmp_path / "fake_yardstick.py"
    script.write_text(_FAKE_YARDSTICK.format(log=str(log), fail=fail))
    return bench.TorchYardstick(sys.executable, str(script)), log


WRN_TINY = TINY | {"network": "wrn-10-1"}


def test_yardstick_runs_before_each_float32_wrn_configuration(tmp_path, monkeypatch):
    torch, log = _fake_yardstick(tmp_path)
    configs = [
        bench.BenchConfig(mode="ce", **WRN_TINY),
        bench.BenchConfig(mode="jem", **WRN_TINY),
        bench.BenchConfig(mode="ce", precision="mixed_bfloat16", **WRN_TINY),
        bench.BenchConfig(mode="ce", **TINY),  # small_cnn: no yardstick
    ]
    # Our side, faked: it logs its turn and reports fixed times per round.
    ce_seconds = iter([0.4, 0.55])
    jem_chain = iter([3.0, 4.6])

    def fake_run_job(job):
        config = job["config"]
        with open(log, "a") as f:
            f.write(
                f"ours {config['mode']} {config['precision']} {config['network']}\n"
            )
        seconds = 1.0 if config["mode"] == "jem" else 0.3
        if config["network"] == "wrn-10-1" and config["precision"] == "float32":
            seconds = next(ce_seconds) if config["mode"] == "ce" else seconds
        result = config | {
            "median_step_seconds": seconds,
            "images_per_second": config["batch_size"] / seconds,
            "traces": 1,
            "peak_rss_build_mb": 900.0,
            "peak_rss_train_mb": 1000.0,
            "step_extra_rss_mb": 100.0,
            "gflops": 1.0,
            "matmul_gflops_float32": 2.0,
            "eval": None,
            "pgd": None,
        }
        if config["mode"] == "jem":
            result["sgld_chain_seconds"] = next(jem_chain)
        return result

    monkeypatch.setattr(suite, "run_job", fake_run_job)
    options = dataclasses.replace(FAST, matmul_size=32)
    report = _in_process(configs, options, torch=torch, base_config=BASE, rounds=2)
    turns = [line.split()[0] for line in log.read_text().splitlines()]
    one_round = ["torch", "ours", "torch", "ours", "ours", "ours"]
    assert turns == one_round * 2
    torch_calls = [line for line in log.read_text().splitlines() if line[0] == "t"]
    common = (
        "--depth=10 --width=1 --batch=8 "
        f"--threads={os.cpu_count()} --classes=4 --size=8 --channels=3 "
        "--repeats=2 --warmup=2"
    )
    assert torch_calls == [f"torch {common}", f"torch {common} --sgld=2"] * 2

    results = report["configurations"]
    assert [r["round"] for r in results] == [1] * 4 + [2] * 4
    assert results[0]["torch"]["ce_step_s"] == 0.5
    assert results[0]["torch"]["arguments"] == common.split()
    assert results[1]["torch"]["sgld_chain_s"] == 4.0
    assert results[2]["torch"] is None and results[3]["torch"] is None
    assert report["rounds"] == 2 and report["torch"]["script"] == torch.script

    by_name = _by_name(report["checks"])
    ce = by_name[("ce_step / torch ce_step", "wrn-10-1, float32, batch 8")]
    # Rounds: 0.4 / 0.5 and 0.55 / 0.5; the mean against the target.
    assert ce["values"] == pytest.approx([0.8, 1.1])
    assert ce["value"] == pytest.approx(0.95)
    assert (ce["min"], ce["max"]) == pytest.approx((0.8, 1.1))
    assert (ce["op"], ce["bound"], ce["passed"]) == ("<=", 0.9, False)
    chain = by_name[
        ("sgld_chain / torch sgld_chain", "wrn-10-1, float32, batch 8, 2 SGLD steps")
    ]
    assert chain["values"] == pytest.approx([0.75, 1.15])
    assert chain["value"] == pytest.approx(0.95) and chain["passed"] is True
    assert not [k for k in by_name if "torch" in k[0] and "small_cnn" in k[1]]

    text = bench.format_report(report)
    assert "| ce | float32 | 8 | 2 | 550.0 |" in text  # a round column
    assert text.count("| 500.0 |") == 4  # PyTorch CE ms of every wrn float32 row
    assert "| 0.950 (0.800–1.100) | <= 0.9 | FAIL |" in text
    assert "value (mean, min–max of 2 rounds)" in text
    assert "PyTorch yardstick" in text and "2 round(s)" in text


def test_yardstick_records_its_result_beside_a_real_configuration(tmp_path):
    torch, _ = _fake_yardstick(tmp_path)
    config = bench.BenchConfig(mode="ce", **WRN_TINY)
    options = dataclasses.replace(FAST, matmul_size=32)
    report = bench.run_benchmark(
        [config],
        options,
        False,
        False,
        epoch=False,
        autotune=False,
        isolate=False,
        torch=torch,
        base_config=BASE,
    )
    [result] = report["configurations"]
    assert result["torch"]["ce_step_s"] == 0.5 and result["round"] == 1
    assert result["traces"] == 1 and result["gflops"] > 0
    [check] = [c for c in report["checks"] if c["check"] == "ce_step / torch ce_step"]
    assert check["value"] == pytest.approx(result["median_step_seconds"] / 0.5)
    assert "values" not in check  # one round: the value itself
    assert report["environment"]["matmul_gflops_bfloat16"] > 0


def test_configurations_need_the_trainer_config_they_change():
    """The library ships no trainer defaults: the caller passes them (hdge-bench,
    configs/base.py's); without them nothing runs."""
    with pytest.raises(ValueError, match="base_config"):
        _in_process([bench.BenchConfig(mode="ce", **TINY)], FAST)
    before = BASE.to_dict()
    config = bench.BenchConfig(mode="jem", **TINY).model_config(BASE, seed=3)
    assert config.seed == 3 and config.loss.sgld_steps == 2
    assert config.backbone.name == "small_cnn"
    assert BASE.to_dict() == before  # changed on a copy


def test_yardstick_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="torch_python"):
        bench.TorchYardstick(str(tmp_path / "python"), __file__)
    with pytest.raises(FileNotFoundError, match="torch_yardstick"):
        bench.TorchYardstick(sys.executable, str(tmp_path / "missing.py"))
    torch, _ = _fake_yardstick(tmp_path, fail=True)
    config = bench.BenchConfig(mode="ce", **WRN_TINY)
    with pytest.raises(RuntimeError, match="(?s)yardstick failed.*no torch here"):
        torch.run(config, FAST)
    with pytest.raises(ValueError, match="float32 Wide ResNet"):
        _in_process(
            [bench.BenchConfig(mode="ce", **TINY)], FAST, torch=torch, base_config=BASE
        )


def _in_process(configs, options, **kwargs):
    """run_benchmark of `configs` in this process, steps only (no epoch timing,
    no autotuning)."""
    return bench.run_benchmark(
        configs, options, epoch=False, autotune=False, isolate=False, **kwargs
    )


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


def test_array_fit_times_keras_arrays_and_ours():
    """Both pipelines train the same model on the same arrays: the same number
    of epochs timed, and Keras's arrays (no override) versus ours."""
    from conftest import smoke_config

    results = [bench.array_fit(k, smoke_config(), epochs=2) for k in (True, False)]
    assert [r["pipeline"] for r in results] == ["keras", "hdge_tf"]
    for r in results:
        assert len(r["epoch_seconds"]) == 2 and r["fit_return_seconds"] >= 0


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
        "base_config": BASE,
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
def test_isolated_job_failure_names_the_job_and_its_error():
    with pytest.raises(
        RuntimeError, match=r"job \{'kind': 'nope'\} failed \(exit 1\)"
    ) as info:
        bench.run_isolated({"kind": "nope"})
    assert "ValueError: Unknown benchmark job kind 'nope'." in str(info.value)


@pytest.mark.slow
def test_cli_writes_json_with_every_configuration(tmp_path):
    policy = keras.mixed_precision.global_policy().name
    process = cli.call(
        hdge_bench,
        [
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
            "--recipes=",
            "--noisolate",
            "--sgld_repeats=1",
            "--matmul_size=64",
            f"--output={tmp_path}/bench.json",
        ],
    )
    assert process.status == 0, process.stderr[-3000:]
    # The dtype policy the configurations ran under is the caller's again.
    assert keras.mixed_precision.global_policy().name == policy
    report = json.loads((tmp_path / "bench.json").read_text())
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
    assert report["autotune"] == [] and "recipes" not in report
    assert [c["check"] for c in report["checks"]] == [
        "hdge_step / ce_step",
        "jem_step / ce_step (CE steps)",
        "sgld_chain / ce_step (CE steps)",
        "ce_step GFLOP/s / matmul GFLOP/s",
    ]
    assert len(configs[2]["sgld_chain_call_seconds"]) == 1
    assert report["torch"] is None and report["rounds"] == 1
    assert all(c["torch"] is None and c["round"] == 1 for c in configs)
    assert "| jem | float32 | 8 |" in process.stdout
    assert "PyTorch" not in process.stdout


def test_the_pytorch_yardstick_ships_with_the_package():
    """hdge-bench --torch_python=... runs the yardstick shipped beside the bench
    package (no file outside the repository): its default points there, and the
    script prints the JSON line the bench reads."""
    script = Path(hdge_bench._TORCH_YARDSTICK.default)
    assert script == Path(bench.__file__).with_name("torch_wrn_step.py")
    text = script.read_text()
    assert "import torch" in text and "json.dumps" in text


def test_recipes_are_timed_side_by_side_against_the_first():
    """Whole training epochs of two trainer configs, interleaved: an HDGE + JEM
    recipe with 8 SGLD steps on every step costs more than HDGE's; every ratio
    is the round's epoch time over the first recipe's, and the report says so."""
    from conftest import smoke_config

    hdge = smoke_config()
    jem = smoke_config()
    jem.loss.update(px_sgld_weight=0.1, sgld_steps=8, replay_buffer_size=64)
    result = bench.recipe_epochs({"hdge": hdge, "jem": jem}, epochs=2, rounds=2)
    seconds = {k: v["epoch_seconds"] for k, v in result["recipes"].items()}
    assert len(seconds["hdge"]) == len(seconds["jem"]) == 2
    np.testing.assert_allclose(result["ratios"]["hdge"], 1.0)
    np.testing.assert_allclose(
        result["ratios"]["jem"], np.divide(seconds["jem"], seconds["hdge"])
    )
    assert min(result["ratios"]["jem"]) > 1.0
    text = bench.format_report({"configurations": [], "checks": [], "recipes": result})
    assert "Recipes: a training epoch of each, 2 interleaved round(s)" in text
    assert f"| jem | {np.mean(seconds['jem']):.2f} (" in text
    with pytest.raises(ValueError, match="epochs must be >= 2"):
        bench.recipe_epochs({"hdge": hdge}, epochs=1)
