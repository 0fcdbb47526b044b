"""Tests for hdge_tf.hardware: reading CPU flags and warning about slow policies."""

import pytest
import tensorflow as tf

from hdge_tf import hardware


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\n"
        f"flags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    )
    return path


def test_cpu_flags_reads_the_first_cpu(tmp_path):
    flags = hardware.cpu_flags(_cpuinfo(tmp_path, "fpu avx2 fma"))
    assert flags == {"fpu", "avx2", "fma"}
    assert hardware.cpu_flags(tmp_path / "missing") is None


def test_cpu_model_names_the_first_cpu(tmp_path):
    assert hardware.cpu_model(_cpuinfo(tmp_path, "fpu")) == "Some CPU"
    assert hardware.cpu_model(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("flags", "native"),
    [("fpu avx2 fma", False), ("avx2 avx512f avx512_bf16", True), ("amx_bf16", True)],
)
def test_native_bf16_from_flags(tmp_path, flags, native):
    parsed = hardware.cpu_flags(_cpuinfo(tmp_path, flags))
    assert hardware.cpu_has_native_bf16(parsed) is native


def test_slow_precision_reasons():
    reason = hardware.slow_precision_reason
    assert "no AMX" in reason("mixed_bfloat16", {"CPU"}, native_bf16=False)
    assert reason("mixed_bfloat16", {"CPU"}, native_bf16=True) is None
    assert reason("mixed_bfloat16", {"CPU"}, native_bf16=None) is None  # unknown
    assert reason("mixed_bfloat16", {"CPU", "TPU"}, native_bf16=False) is None
    assert "needs a GPU" in reason("mixed_float16", {"CPU"}, native_bf16=True)
    assert reason("mixed_float16", {"CPU", "GPU"}, native_bf16=False) is None
    assert reason("float32", {"CPU"}, native_bf16=False) is None


def test_warning_matches_this_host():
    devices = {d.device_type for d in tf.config.list_physical_devices()}
    expected = hardware.slow_precision_reason(
        "mixed_bfloat16", devices, hardware.cpu_has_native_bf16()
    )
    assert hardware.warn_if_slow_precision("mixed_bfloat16") == expected
    assert hardware.warn_if_slow_precision("float32") is None
