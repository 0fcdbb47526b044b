"""The evaluation report's figures: reliability diagram, OOD score histograms,
accuracy under attack. Each function writes one PNG and returns nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hdge_tf.plots import new_figure


def reliability_diagram(
    bins: Mapping[str, np.ndarray], ece: float, path: str | Path
) -> None:
    """Accuracy per confidence bin against the diagonal, with the bin counts."""
    lower, upper = np.asarray(bins["lower"]), np.asarray(bins["upper"])
    width = upper - lower
    accuracy = np.nan_to_num(np.asarray(bins["accuracy"], float))
    fig = new_figure(figsize=(4.5, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(lower, accuracy, width, align="edge", edgecolor="k", label="accuracy")
    gap = np.nan_to_num(np.asarray(bins["confidence"], float)) - accuracy
    top.bar(
        lower,
        gap,
        width,
        bottom=accuracy,
        align="edge",
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", lw=1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE {ece:.4f})")
    top.legend(loc="upper left")
    bottom.bar(lower, bins["count"], width, align="edge", edgecolor="k")
    bottom.set_yscale("symlog")
    bottom.set_xlabel("confidence max p(y|x)")
    bottom.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def score_histograms(
    score: str,
    in_scores: np.ndarray,
    out_scores: Mapping[str, np.ndarray],
    aurocs: Mapping[str, float],
    path: str | Path,
) -> None:
    """One panel per OOD set: the score's histogram there and in-distribution."""
    names = list(out_scores)
    fig = new_figure(figsize=(3.6 * len(names), 3))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        both = np.concatenate([in_scores, out_scores[name]])
        edges = np.histogram_bin_edges(both[np.isfinite(both)], bins=40)
        ax.hist(in_scores, edges, alpha=0.6, density=True, label="in-distribution")
        ax.hist(out_scores[name], edges, alpha=0.6, density=True, label=name)
        ax.set_title(f"{name}: AUROC {aurocs[name]:.3f}")
        ax.set_xlabel(score)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def robustness_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path
) -> None:
    """Accuracy against epsilon, one panel per norm; curves[norm] = (eps, acc)."""
    fig = new_figure(figsize=(3.6 * len(curves), 3))
    axes = fig.subplots(1, len(curves), squeeze=False)
    for ax, (norm, (epsilons, accuracies)) in zip(axes[0], curves.items(), strict=True):
        ax.plot(epsilons, accuracies, "o-")
        ax.set_title(f"PGD {norm}")
        ax.set_xlabel("epsilon (input units, [-1, 1] scale)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
