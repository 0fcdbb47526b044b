"""Figures written next to a run's numbers."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Counts of rare events (a step skipped as diverged, a loss-scale overflow): a
# panel of zeros says nothing, so they get one only when some epoch counted any.
EVENT_COUNTS = ("skipped_steps", "loss_scale_overflows")


def plot_history(csv_path: str | Path, png_path: str | Path) -> None:
    """Loss terms and accuracy per epoch from a Keras CSVLogger file (training vs
    the held-out validation split); see `history_figure`."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    history_figure(rows).savefig(png_path, dpi=100)


def new_figure(**kwargs) -> Figure:
    """A figure on its own Agg canvas (PNG files, no display): pyplot's global
    state and the process's matplotlib backend stay as the caller set them."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def history_figure(rows: Sequence[dict[str, str]]) -> Figure:
    """A panel per metric of CSVLogger `rows`: "training" and, where every epoch
    has one, "validation" (the split held out of training, never the test set).
    `EVENT_COUNTS` columns get a panel only when not all zero."""
    epochs = [int(r["epoch"]) + 1 for r in rows]
    names = [
        k
        for k in rows[0]
        if k != "epoch"
        and not k.startswith("val_")
        and (k not in EVENT_COUNTS or any(_value(r[k]) for r in rows))
    ]
    # CSVLogger writes "NA" for validation columns of epochs without validation.
    has_val = {n: all(r.get(f"val_{n}", "NA") != "NA" for r in rows) for n in names}
    # A grid at most 4 panels wide, so a run with many loss terms stays readable.
    columns = min(len(names), 4)
    grid_rows = math.ceil(len(names) / columns)
    fig = new_figure(figsize=(3.2 * columns, 3 * grid_rows))
    axes = fig.subplots(grid_rows, columns, squeeze=False)
    for ax in axes.flat[len(names) :]:
        fig.delaxes(ax)
    for ax, name in zip(axes.flat, names, strict=False):
        ax.plot(epochs, [_value(r[name]) for r in rows], label="training")
        if has_val[name]:
            ax.plot(
                epochs, [_value(r[f"val_{name}"]) for r in rows], label="validation"
            )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def _value(text: str) -> float:
    """A CSVLogger cell; its "NA" (no value) as NaN, a gap in the line."""
    return float("nan") if text in ("NA", "") else float(text)


def plot_image_grid(
    images,
    png_path: str | Path,
    rows: int | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Images [N, H, W, C] in [-1, 1] (clipped), C = 1 (gray) or 3 (RGB), as a grid.

    With `row_labels`, one row per label (e.g. "class 3", written left of the row),
    filled in order; else `rows` rows, or a near-square grid. Each image is drawn at
    about 0.8 inch (80 px) on its longer side, less for grids over 20 wide or tall.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
        raise ValueError(
            f"Expected images [N, H, W, C] with N >= 1 and C = 1 or 3, got shape "
            f"{images.shape}."
        )
    n, height, width, channels = images.shape
    if row_labels is not None:
        if rows is not None and rows != len(row_labels):
            raise ValueError(f"rows={rows} but {len(row_labels)} row_labels given.")
        rows = len(row_labels)
    if rows is None:
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
    else:
        cols = math.ceil(n / rows)
    # One mosaic on one axes (not an axes per image): fast for large grids. Images
    # are separated, and empty cells filled, with white.
    pad = max(1, max(height, width) // 16)
    mosaic = np.ones(
        (rows * (height + pad) + pad, cols * (width + pad) + pad, channels), np.float32
    )
    for i, image in enumerate((np.clip(images, -1.0, 1.0) + 1.0) / 2.0):
        top = pad + (i // cols) * (height + pad)
        left = pad + (i % cols) * (width + pad)
        mosaic[top : top + height, left : left + width] = image

    inch = min(0.8, 16.0 / max(rows, cols)) / max(height, width)  # per image pixel
    grid_w, grid_h = mosaic.shape[1] * inch, mosaic.shape[0] * inch
    margin, label_w = 0.05, (0.8 if row_labels is not None else 0.0)
    title_h = 0.3 if title else 0.0
    needed = label_w + grid_w + 2 * margin
    # Narrow grids get a wider figure (grid centred) so the title fits.
    fig_w = max(needed, 0.075 * len(title) + 2 * margin if title else 0.0)
    fig_h = title_h + grid_h + 2 * margin
    fig = new_figure(figsize=(fig_w, fig_h))
    left = margin + label_w + (fig_w - needed) / 2
    ax = fig.add_axes([left / fig_w, margin / fig_h, grid_w / fig_w, grid_h / fig_h])
    ax.imshow(
        mosaic[..., 0] if channels == 1 else mosaic,
        cmap="gray" if channels == 1 else None,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
        aspect="auto",
    )
    ax.set_xticks([])
    if row_labels is not None:
        centers = [pad + r * (height + pad) + (height - 1) / 2 for r in range(rows)]
        ax.set_yticks(centers, [str(label) for label in row_labels])
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(
            title, y=1 - 0.5 * (margin + title_h) / fig_h, va="center", fontsize=10
        )
    fig.savefig(png_path, dpi=100)
