"""Precision policies: set one for a block of work, and warn before a policy that
the host cannot run fast; whether training steps are XLA-compiled
(`resolve_jit_compile`).

Mixed precision pays off only where the low-precision math is native: GPUs for
float16, TPUs and CPUs with AMX or AVX512-BF16 for bfloat16. Elsewhere oneDNN and
Eigen emulate it; on this project's AVX2-only CI CPU, mixed_bfloat16 trained
WRN-16-4 12.6-13.9x slower than float32 and the demo CNN 8.9x slower
(BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import tensorflow as tf
from absl import logging

# /proc/cpuinfo flags of CPUs with bfloat16 arithmetic (Intel AMX, AVX512-BF16).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Values of `train.jit_compile` / `HDGEClassifier.compile(jit_compile=...)`; the
# strings "true"/"false" (any case) too, which is what an absl override such as
# --config.train.jit_compile=True gives for the string-typed config field.
JIT_COMPILE_VALUES = ("auto", True, False)


@contextlib.contextmanager
def precision_policy(name: str):
    """Sets the global Keras dtype policy, restoring the previous one on exit."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _first_cpu_field(key: str, cpuinfo: str | Path) -> str | None:
    """The first CPU's `key` line of /proc/cpuinfo, or None where unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The first CPU's feature flags, or None where /proc/cpuinfo is unreadable."""
    value = _first_cpu_field("flags", cpuinfo)
    return None if value is None else frozenset(value.split())


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The first CPU's model name (e.g. "AMD EPYC"), or None where unknown: every
    timing is read against it."""
    return _first_cpu_field("model name", cpuinfo) or None


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool | None:
    """Whether the CPU does bfloat16 math natively; None when unknown."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def slow_precision_reason(
    policy: str, devices: set[str], native_bf16: bool | None
) -> str | None:
    """Why `policy` will be slower than float32 on a host with `devices` (device
    types, e.g. {"CPU", "GPU"}), or None if it need not be."""
    if policy == "mixed_float16" and "GPU" not in devices:
        return "mixed_float16 needs a GPU; CPUs emulate float16 math"
    if (
        policy == "mixed_bfloat16"
        and not devices & {"GPU", "TPU"}
        and native_bf16 is False
    ):
        return (
            "this CPU has no AMX or AVX512-BF16, so bfloat16 math is emulated "
            "(measured 9-14x slower than float32 on such a CPU)"
        )
    return None


def warn_if_slow_precision(policy: str) -> str | None:
    """Logs (and returns) a warning when `policy` will run slower than float32."""
    devices = {d.device_type for d in tf.config.list_physical_devices()}
    reason = slow_precision_reason(policy, devices, cpu_has_native_bf16())
    if reason:
        logging.warning(
            "precision=%s: %s. Use precision=float32 on this host.", policy, reason
        )
    return reason


def resolve_jit_compile(
    value, deterministic: bool | None = None, name: str = "jit_compile"
) -> bool:
    """Whether a training step runs XLA-compiled, for `value` in
    `JIT_COMPILE_VALUES` (or "true"/"false"); errors call it `name`.

    "auto" is on when TensorFlow sees a GPU and off on CPU-only hosts: on our CPU
    XLA was measured no faster than TF's oneDNN kernels (BENCHMARKS.md). It is
    off as well under TF op determinism (`deterministic`; None reads TF's
    setting), which does not cover XLA's kernels; Keras turns its own jit_compile
    off there too.
    True with determinism is a ValueError rather than silently off.
    """
    if isinstance(value, str) and value.lower() in ("auto", "true", "false"):
        value = {"auto": "auto", "true": True, "false": False}[value.lower()]
    if not (value == "auto" or isinstance(value, bool)):
        raise ValueError(
            f"Unknown {name} value {value!r}; expected one of "
            f"{JIT_COMPILE_VALUES} (or the strings 'true'/'false')."
        )
    if deterministic is None:
        # TF has no public getter; Keras reads the same function.
        from tensorflow.python.framework.config import is_op_determinism_enabled

        deterministic = is_op_determinism_enabled()
    if value == "auto":
        return bool(tf.config.list_physical_devices("GPU")) and not deterministic
    if value and deterministic:
        raise ValueError(
            f"{name}=True with TF op determinism (config.deterministic=True): "
            "determinism does not cover XLA's kernels. Turn one of them off."
        )
    return value
