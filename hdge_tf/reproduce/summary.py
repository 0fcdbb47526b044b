"""Seeds to error bars: per-variant means, spreads and verdicts.

A verdict compares two variants' per-seed values with a two-standard-error rule:
the difference of means must exceed twice its standard error,
sqrt(s_a²/n_a + s_b²/n_b) with sample standard deviations, to count. At 3 seeds
that is a loose test (roughly a 90% one-sided level); the report shows every
per-seed value so a reader can judge for themselves.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

HOLDS = "holds"
REVERSED = "does not hold: reversed"
UNRESOLVED = "does not hold at this scale: within error bars"
TOO_FEW = "not tested: fewer than 2 seeds"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One metric of one variant over seeds."""

    values: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof 1); 0 for a single seed."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "n": self.n,
            "values": list(self.values),
            "seeds": list(self.seeds),
        }


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """{"auroc": {"log_px": {"digits": 0.9}}} -> {"auroc.log_px.digits": 0.9};
    only numbers are kept."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def aggregate(records: list[dict]) -> dict[str, dict[str, Cell]]:
    """{variant: {metric path: Cell}} from job records (their "metrics",
    "samples" and "train_seconds"), seeds in increasing order."""
    per_variant: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for record in records:
        numbers = flatten(
            {
                "metrics": record.get("metrics", {}),
                "samples": record.get("samples", {}),
                "train_seconds": record.get("train_seconds"),
            }
        )
        cells = per_variant.setdefault(record["variant"], {})
        for path, value in numbers.items():
            path = path.removeprefix("metrics.")
            cells.setdefault(path, []).append((int(record["seed"]), value))
    return {
        variant: {
            path: Cell(
                tuple(v for _, v in sorted(pairs)), tuple(s for s, _ in sorted(pairs))
            )
            for path, pairs in metrics.items()
        }
        for variant, metrics in per_variant.items()
    }


def compare(a: Cell, b: Cell, higher_is_better: bool = True) -> dict:
    """Does `a` beat `b`? The difference of means (a - b), its standard error and
    the verdict (HOLDS, REVERSED, UNRESOLVED, or TOO_FEW below 2 seeds each)."""
    difference = a.mean - b.mean
    stderr = math.sqrt(
        (a.std**2 / a.n if a.n else 0.0) + (b.std**2 / b.n if b.n else 0.0)
    )
    if min(a.n, b.n) < 2:  # no spread to compare the difference with
        return {"difference": difference, "stderr": stderr, "verdict": TOO_FEW}
    signed = difference if higher_is_better else -difference
    if signed > 2 * stderr and signed > 0:
        verdict = HOLDS
    elif signed < -2 * stderr and signed < 0:
        verdict = REVERSED
    else:
        verdict = UNRESOLVED
    return {"difference": difference, "stderr": stderr, "verdict": verdict}


def within(a: Cell, b: Cell, tolerance: float) -> dict:
    """Is `a` no worse than `b` by more than `tolerance` (e.g. accuracy kept)?
    Holds when mean(a) >= mean(b) - tolerance."""
    difference = a.mean - b.mean
    stderr = math.sqrt(a.std**2 / max(a.n, 1) + b.std**2 / max(b.n, 1))
    verdict = HOLDS if difference >= -tolerance else f"does not hold: {difference:+.4f}"
    return {"difference": difference, "stderr": stderr, "verdict": verdict}


def at_least(cell: Cell, target: float, higher_is_better: bool = True) -> dict:
    """Does the mean meet a target (<= target when lower is better)?"""
    met = cell.mean >= target if higher_is_better else cell.mean <= target
    return {
        "threshold": target,
        "verdict": HOLDS if met else f"does not hold: {cell.mean:.4f}",
    }


def fmt(cell: Cell | None, digits: int = 3, percent: bool = False) -> str:
    """A cell as the reports print it: mean ± std (n=seeds), or a dash."""
    if cell is None:
        return "—"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else digits
    return (
        f"{cell.mean * scale:.{digits}f} ± {cell.std * scale:.{digits}f} (n={cell.n})"
    )
