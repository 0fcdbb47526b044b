"""Figures written next to a run's numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt


def plot_history(csv_path: str | Path, png_path: str | Path) -> None:
    """Loss terms and accuracy per epoch from a Keras CSVLogger file, train vs test."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    names = [k for k in rows[0] if k != "epoch" and not k.startswith("val_")]
    # CSVLogger writes "NA" for validation columns of epochs without validation.
    has_val = {n: all(r.get(f"val_{n}", "NA") != "NA" for r in rows) for n in names}
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names), 3), squeeze=False
    )
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(epochs, [float(r[name]) for r in rows], label="train")
        if has_val[name]:
            ax.plot(epochs, [float(r[f"val_{name}"]) for r in rows], label="test")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
