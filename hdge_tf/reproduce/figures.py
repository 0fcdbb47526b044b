"""The figures of `hdge-reproduce`'s report: log p(x) AUROC against the queue size
K, and per variant."""

from __future__ import annotations

from pathlib import Path

from hdge_tf.plots import new_figure
from hdge_tf.reproduce.claims import ood_sets
from hdge_tf.reproduce.summary import Cell


def draw_figures(
    config,
    cells: dict[str, dict[str, Cell]],
    by_k: dict[int, dict[str, Cell]],
    root: Path,
) -> list[str]:
    """Writes k_ablation.png (from two queue sizes on) and ood_auroc.png under
    `root`; returns the names of those written."""
    names = []
    sets = ood_sets(cells)
    if len(by_k) >= 2 and sets:
        fig = new_figure(figsize=(6, 4))
        ax = fig.subplots()
        ks = sorted(by_k)
        for name in sets:
            path = f"auroc.log_px.{name}"
            points = [(k, by_k[k][path]) for k in ks if path in by_k[k]]
            ax.errorbar(
                [k for k, _ in points],
                [c.mean for _, c in points],
                yerr=[c.std for _, c in points],
                marker="o",
                capsize=3,
                label=name,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("queue size K")
        ax.set_ylabel("log p(x) AUROC (mean ± std over seeds)")
        ax.set_title("HDGE: OOD detection vs K (paper Table 3)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(root / "k_ablation.png", dpi=120)
        names.append("k_ablation.png")
    main = [v for v in config.variants if v in cells]
    if main and sets:
        fig = new_figure(figsize=(7, 4))
        ax = fig.subplots()
        width = 0.8 / len(main)
        for i, v in enumerate(main):
            values = [cells[v].get(f"auroc.log_px.{s}") for s in sets]
            ax.bar(
                [j + i * width for j in range(len(sets))],
                [c.mean if c else 0 for c in values],
                width,
                yerr=[c.std if c else 0 for c in values],
                capsize=2,
                label=config.variants[v].label,
            )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sets))], sets)
        ax.set_ylabel("log p(x) AUROC")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(root / "ood_auroc.png", dpi=120)
        names.append("ood_auroc.png")
    return names
