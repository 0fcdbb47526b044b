"""Performance targets: ratios of measured times and memory, each with the bound
it is held to (the constants below) and a pass or fail.

Each target holds at its own settings (K, classes, batch, SGLD steps, network); a
ratio measured at other settings is reported without a target.

Results of several rounds (each result's `round`, see `suite.run_benchmark`) are
checked round by round; a check then reports the mean of its per-round values
(`value`, against the target) with the values themselves and their min and max.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Sequence

from hdge_tf.bench.config import (
    JEM_SGLD_STEPS,
    TARGET_QUEUE_SIZE,
    BenchConfig,
    parse_network,
)

HDGE_OVER_CE_MAX = {10: 1.03, 100: 1.10}  # by number of classes, at K = 65,536
CONTRASTIVE_EXTRA_MB_MAX = 200.0  # at 100 classes, K = 65,536, batch 256
CONTRASTIVE_MB_SETTINGS = {
    "num_classes": 100,
    "queue_size": TARGET_QUEUE_SIZE,
    "batch_size": 256,
}
BF16_SPEEDUP_MIN = 2.5
JEM_OVER_CE_MAX = 16.0  # in CE steps, with JEM_SGLD_STEPS SGLD steps
SGLD_CHAIN_OVER_CE_MAX = 13.5  # the chain alone, in CE steps, JEM_SGLD_STEPS steps
# A float32 Wide ResNet CE step's GFLOP/s over the same process's matmul GFLOP/s.
CE_OVER_MATMUL_MIN = 0.75
# Against the PyTorch yardstick (float32 Wide ResNet, same host, same minute).
CE_OVER_TORCH_MAX = 0.9
SGLD_CHAIN_OVER_TORCH_MAX = 1.0
EPOCH_TOLERANCE = 0.10  # epoch time within 10% of step time x steps

_SETTING_FORMATS = {
    "network": "{}",
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
        out = [_check("jem_step / ce_step (CE steps)", where, ratio, *target)]
        if hdge.get("sgld_chain_seconds") is not None:
            chain = hdge["sgld_chain_seconds"] / ce["median_step_seconds"]
            target = _target_if(applies, "<=", SGLD_CHAIN_OVER_CE_MAX)
            out.append(_check("sgld_chain / ce_step (CE steps)", where, chain, *target))
        return out
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


def _is_wrn(r: dict) -> bool:
    return parse_network(r["network"])[0] == "wrn"


def _flop_checks(r: dict) -> list[dict]:
    """A float32 CE step's GFLOP/s against the matmul's of its process."""
    if (r["mode"], r["precision"]) != ("ce", "float32") or not r.get("gflops"):
        return []
    target = _target_if(_is_wrn(r), ">=", CE_OVER_MATMUL_MIN)
    ratio = r["gflops"] / r["matmul_gflops_float32"]
    where = _settings(r, "network", "precision", "batch_size")
    return [_check("ce_step GFLOP/s / matmul GFLOP/s", where, ratio, *target)]


def _torch_checks(r: dict) -> list[dict]:
    """Our CE step and SGLD chain against the PyTorch yardstick's, run just
    before at the same settings."""
    torch = r.get("torch")
    if not torch:
        return []
    if r["mode"] == "ce":
        where = _settings(r, "network", "precision", "batch_size")
        ratio = r["median_step_seconds"] / torch["ce_step_s"]
        return [
            _check("ce_step / torch ce_step", where, ratio, "<=", CE_OVER_TORCH_MAX)
        ]
    if r["mode"] == "jem" and r.get("sgld_chain_seconds") is not None:
        where = _settings(r, "network", "precision", "batch_size", "sgld_steps")
        ratio = r["sgld_chain_seconds"] / torch["sgld_chain_s"]
        bound = SGLD_CHAIN_OVER_TORCH_MAX
        return [_check("sgld_chain / torch sgld_chain", where, ratio, "<=", bound)]
    return []


def _round_checks(results: Sequence[dict]) -> list[dict]:
    """The configuration checks of one round's results."""
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
    for r in results:
        out += _flop_checks(r) + _torch_checks(r)
    return out


def _across_rounds(per_round: list[list[dict]]) -> list[dict]:
    """One check per (check, settings): the mean of its per-round values against
    the target, with `values` (round by round), `min` and `max`."""
    if len(per_round) == 1:
        return per_round[0]
    grouped: dict[tuple, list[dict]] = {}
    for round_checks in per_round:
        for c in round_checks:
            grouped.setdefault((c["check"], c["settings"]), []).append(c)
    out = []
    for (name, settings), found in grouped.items():
        values = [c["value"] for c in found]
        mean = statistics.fmean(values)
        merged = _check(name, settings, mean, found[0]["op"], found[0]["bound"])
        merged.update(values=values, min=min(values), max=max(values))
        out.append(merged)
    return out


def checks(results: Sequence[dict], epoch: dict | None = None) -> list[dict]:
    """Every ratio with its target, from `run_configuration` results
    (and the `epoch_overhead` result); round by round, then merged."""
    rounds: dict[int, list[dict]] = {}
    for r in results:
        rounds.setdefault(r.get("round", 1), []).append(r)
    per_round = [_round_checks(rounds[k]) for k in sorted(rounds)]
    out = _across_rounds(per_round) if per_round else []
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
