"""The issue's performance targets and the ratios checked against them.

Each target applies at the settings it was stated for; a ratio measured at other
settings (K, classes, batch, SGLD steps) is reported without a target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from hdge_tf.bench.config import JEM_SGLD_STEPS, TARGET_QUEUE_SIZE, BenchConfig

HDGE_OVER_CE_MAX = {10: 1.03, 100: 1.10}  # by number of classes, at K = 65,536
CONTRASTIVE_EXTRA_MB_MAX = 200.0  # at 100 classes, K = 65,536, batch 256
CONTRASTIVE_MB_SETTINGS = {
    "num_classes": 100,
    "queue_size": TARGET_QUEUE_SIZE,
    "batch_size": 256,
}
BF16_SPEEDUP_MIN = 2.5
JEM_OVER_CE_MAX = 16.0  # in CE steps, with JEM_SGLD_STEPS SGLD steps
EPOCH_TOLERANCE = 0.10  # epoch time within 10% of step time x steps

_SETTING_FORMATS = {
    "mode": "{}",
    "precision": "{}",
    "batch_size": "batch {}",
    "num_classes": "{} classes",
    "queue_size": "K={}",
    "sgld_steps": "{} SGLD steps",
}


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


def _target_if(applies: bool, op: str, bound: float | None) -> tuple:
    """(op, bound) where the target applies, else (None, None): reported only."""
    return (op, bound) if applies else (None, None)


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
    # image_shape comes back from JSON as a list.
    return tuple(value) if isinstance(value, list) else value


def _settings(r: dict, *fields: str) -> str:
    return ", ".join(_SETTING_FORMATS[f].format(r[f]) for f in fields)


def _mode_checks(hdge: dict, ce: dict) -> list[dict]:
    """hdge or jem against the CE step of the same settings."""
    ratio = hdge["median_step_seconds"] / ce["median_step_seconds"]
    if hdge["mode"] == "jem":
        applies = hdge["sgld_steps"] == JEM_SGLD_STEPS
        where = _settings(hdge, "precision", "batch_size", "sgld_steps")
        target = _target_if(applies, "<=", JEM_OVER_CE_MAX)
        return [_check("jem_step / ce_step (CE steps)", where, ratio, *target)]
    bound = HDGE_OVER_CE_MAX.get(hdge["num_classes"])
    applies = bound is not None and hdge["queue_size"] == TARGET_QUEUE_SIZE
    where = _settings(hdge, "precision", "batch_size", "num_classes", "queue_size")
    target = _target_if(applies, "<=", bound)
    out = [_check("hdge_step / ce_step", where, ratio, *target)]
    if ce["isolated"] and hdge["isolated"]:
        extra = hdge["peak_rss_train_mb"] - ce["peak_rss_train_mb"]
        applies = all(hdge[k] == v for k, v in CONTRASTIVE_MB_SETTINGS.items())
        target = _target_if(applies, "<", CONTRASTIVE_EXTRA_MB_MAX)
        out.append(
            _check("contrastive extra peak RSS (MB, hdge - ce)", where, extra, *target)
        )
    return out


def checks(results: Sequence[dict], epoch: dict | None = None) -> list[dict]:
    """The issue's ratios with their targets, from `run_configuration` results
    (and the `epoch_overhead` result)."""
    out = []
    by_mode = _by_setting(results, "mode")
    for (shared, mode), hdge in by_mode.items():
        ce = by_mode.get((shared, "ce"))
        if ce is not None and mode != "ce":
            out += _mode_checks(hdge, ce)
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
