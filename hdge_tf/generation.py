"""Samples from a trained energy classifier: SGLD chains on p(x) or p(x|y).

`draw_samples` runs `sampling.sgld` in chunks of bounded size from fresh uniform
noise or from the model's replay buffer (read only); `callbacks.SampleGrid` writes a
grid of such samples every few epochs of training. The grid itself is
`plots.plot_image_grid`, and `hdge-sample` (bin/hdge_sample.py) is the CLI.

Every random number comes from stateless ops seeded by `seed` (chunk i uses
fold_in(seed, i)), so a draw is reproducible and never advances TF's, Keras' or
numpy's global generators, e.g. in the middle of a training run.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hdge_tf import input_checks, sampling
from hdge_tf.sgld_settings import SGLDSettings

# "fresh": uniform noise; "buffer": the replay buffer's long-run chains;
# "gaussian": the model's class Gaussians (`chain_starts`, sgld.start="class_gaussian").
STARTS = ("fresh", "buffer", "gaussian")


def available_starts(model: keras.Model) -> tuple[str, ...]:
    """The starts `model` can sample from: "fresh" always, "buffer" with a replay
    buffer, "gaussian" with fitted class Gaussians."""
    starts = ["fresh"]
    if getattr(model, "replay_buffer", None) is not None:
        starts.append("buffer")
    if getattr(model, "chain_starts", None) is not None:
        starts.append("gaussian")
    return tuple(starts)


def default_start(model: keras.Model) -> str:
    """The chain start to use by default: "buffer" when the model has a replay
    buffer (its rows are long-run chains), else "fresh"."""
    return "buffer" if getattr(model, "replay_buffer", None) is not None else "fresh"


def num_classes(model: keras.Model) -> int:
    """The model's number of classes (its `num_classes`, else its output width)."""
    return int(getattr(model, "num_classes", None) or model.output_shape[-1])


def draw_samples(
    model: keras.Model,
    num: int,
    conditional: bool,
    steps: int,
    start: str = "fresh",
    step_size: float | None = None,
    noise_std: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
    clip: bool | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """SGLD samples of p(x|y) (conditional) or p(x) from `model`.

    Args:
      model: a classifier of [N, H, W, C] images in [-1, 1] (e.g. HDGEClassifier).
      num: samples per class when conditional, else in total.
      conditional: chains of p(x|y) ∝ exp f(x)[y], one block of `num` per class.
      steps: SGLD steps per chain (0 returns the starts).
      start: "fresh" (uniform [-1, 1] noise), "buffer" (rows of the model's replay
        buffer: of class y's slice for conditional chains on a class-split buffer,
        else uniform over the buffer; never restarted, never written back) or
        "gaussian" (the model's chain-start draws: its class Gaussians, a random
        class's for p(x), with its `sgld.start_uniform_fraction` of uniform noise).
      step_size, noise_std: default to the model's `sgld.step_size` /
        `sgld.noise_std`, else JEM's 1.0 / 0.01 (`SGLDSettings`' defaults).
      batch_size: chains run at once (bounds memory).
      seed: int; chunk i of `batch_size` chains uses fold_in(seed, i).
      clip: keep every step in [-1, 1]; defaults to the model's `sgld.clip`.

    Returns:
      (samples float32 [N, H, W, C]; labels int32 [N] sorted by class, or
      None when unconditional). Conditional N = num * classes, class c in rows
      [c * num, (c + 1) * num).
    """
    if start not in STARTS:
        raise ValueError(f"Unknown start {start!r}; expected one of {STARTS}.")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}.")
    if steps < 0:
        raise ValueError(f"SGLD steps must be >= 0, got {steps}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    buffer = getattr(model, "replay_buffer", None)
    if start not in available_starts(model):
        raise ValueError(
            f"start={start!r} needs a model with a "
            f"{'replay buffer' if start == 'buffer' else 'fitted class Gaussians'}, "
            f"and {type(model).__name__} {model.name!r} has none: only models "
            "trained with JEM's SGLD terms keep a buffer (loss px_sgld_weight > 0 "
            "or pxy_sgld_weight > 0), and Gaussians with loss.sgld_start="
            f"'class_gaussian'. Starts of this model: {available_starts(model)}."
        )
    settings = getattr(model, "sgld", None)
    if not isinstance(settings, SGLDSettings):  # a plain classifier: JEM's
        settings = SGLDSettings()
    if clip is None:
        clip = settings.clip
    if step_size is None:
        step_size = settings.step_size
    if noise_std is None:
        noise_std = settings.noise_std
    classes = num_classes(model)
    image_shape = input_checks.model_image_shape(model)
    if image_shape is None or None in image_shape:
        shown = "unknown" if image_shape is None else str(image_shape)
        raise ValueError(
            f"Sampling draws images of the model's (height, width, channels), and "
            f"{type(model).__name__} {model.name!r} does not fix them (its image "
            f"shape: {shown}): build the model for one image size."
        )
    labels = np.repeat(np.arange(classes, dtype=np.int32), num) if conditional else None
    total = num * classes if conditional else num
    # Only a class-split buffer can hand out rows of a given class.
    by_class = conditional and buffer is not None and buffer.num_classes is not None

    chunks, begin = [], time.time()
    for index, low in enumerate(range(0, total, batch_size)):
        high = min(low + batch_size, total)
        chunk_labels = None if labels is None else labels[low:high]
        chunk_seed = tf.random.experimental.stateless_fold_in(
            sampling.seed_pair(seed), index
        )
        start_seed, chain_seed = (
            tf.random.experimental.stateless_fold_in(chunk_seed, i) for i in range(2)
        )
        if start == "fresh":
            starts = tf.random.stateless_uniform(
                (high - low, *image_shape), start_seed, -1.0, 1.0
            )
        elif start == "gaussian":
            start_labels = chunk_labels
            if start_labels is None:  # p(x): a random class's Gaussian each
                start_labels = tf.random.stateless_uniform(
                    [high - low], start_seed, 0, classes, dtype=tf.int32
                )
            starts = model.chain_starts.sample(start_labels, start_seed)
        else:
            starts, _ = buffer.sample(
                high - low,
                labels=chunk_labels if by_class else None,
                reinit_freq=0.0,
                seed=start_seed,
            )
        # The buffer's or Gaussians' images meet the model here.
        input_checks.check_image_shape(
            starts.shape, image_shape, f"The chain starts ({start})"
        )
        samples = sampling.sgld(
            model,
            starts,
            steps,
            step_size,
            noise_std,
            chunk_labels,
            chain_seed,
            clip=clip,
        )
        chunks.append(samples.numpy())
        logging.info(
            "Sampled %d/%d %s chains (%d SGLD steps from %s) in %.1fs.",
            high,
            total,
            "p(x|y)" if conditional else "p(x)",
            steps,
            start,
            time.time() - begin,
        )
    return np.concatenate(chunks).astype(np.float32), labels
