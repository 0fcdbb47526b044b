"""What one benchmarked configuration is, and the trainer's model it builds.

A configuration is (mode, precision, network, classes, batch size, K, SGLD steps,
XLA):

    ce    cross-entropy only (the queue is batch-sized: CE does not read it)
    hdge  CE + contrastive log p(x|y) against a K-slot logit queue
    jem   hdge + JEM's SGLD term for log p(x) (`sgld_steps` steps, replay buffer)

`BenchConfig.model_config` turns one into a trainer config (on top of the base
trainer config the caller passes; hdge-bench passes configs/base.py's), so the bench
times the very model `hdge-train` builds (`training.build_model`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence

import keras
import ml_collections

from hdge_tf import hardware, training
from hdge_tf.model import HDGEClassifier

MODES = ("ce", "hdge", "jem")
PRECISIONS = ("float32", "mixed_bfloat16")
# Small networks by name; "wrn-D-W" is any Wide ResNet.
NETWORKS = {
    # The mnist5k demo's CNN: fast enough for tests at 8x8.
    "small_cnn": ("small_cnn", {"filters": (32, 64, 128), "convs_per_stage": 1}),
}
_WRN = re.compile(r"wrn-(\d+)-(\d+)")

# The settings the targets in targets.py hold at, also the defaults.
TARGET_QUEUE_SIZE = 65_536
JEM_SGLD_STEPS = 20


def parse_network(name: str) -> tuple[str, dict]:
    """("wrn", {depth, width}) for "wrn-D-W", else an entry of `NETWORKS`."""
    match = _WRN.fullmatch(name)
    if match:
        return "wrn", {"depth": int(match[1]), "width": int(match[2])}
    if name in NETWORKS:
        backbone, kwargs = NETWORKS[name]
        return backbone, dict(kwargs)
    raise ValueError(
        f"Unknown network {name!r}: use wrn-DEPTH-WIDTH (e.g. wrn-16-4, wrn-28-10) "
        f"or one of {sorted(NETWORKS)}."
    )


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmarked training configuration."""

    mode: str = "hdge"
    precision: str = "float32"
    network: str = "wrn-16-4"
    num_classes: int = 10
    batch_size: int = 64
    image_shape: tuple[int, int, int] = (32, 32, 3)
    queue_size: int = TARGET_QUEUE_SIZE
    sgld_steps: int = JEM_SGLD_STEPS
    replay_buffer_size: int = 10_000
    # "auto", "true" or "false": `train.jit_compile` (auto: on with a GPU).
    jit_compile: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; expected one of {MODES}.")
        hardware.resolve_jit_compile(self.jit_compile, deterministic=False)
        parse_network(self.network)  # bad names fail here, not in a child process
        keras.mixed_precision.Policy(self.precision)
        object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.precision}/b{self.batch_size}"

    def model_kwargs(self) -> dict:
        """`HDGEClassifier` arguments of this mode."""
        if self.mode == "ce":
            # The model always keeps (and writes) a queue; a batch-sized one keeps
            # its cost out of the CE baseline.
            return {"pxy_contrast_weight": 0.0, "queue_size": self.batch_size}
        kwargs = {"pxy_contrast_weight": 1.0, "queue_size": self.queue_size}
        if self.mode == "jem":
            kwargs.update(
                px_sgld_weight=1.0,
                sgld_steps=self.sgld_steps,
                replay_buffer_size=self.replay_buffer_size,
            )
        return kwargs

    def model_config(
        self, base_config: ml_collections.ConfigDict, seed: int = 0
    ) -> ml_collections.ConfigDict:
        """This configuration as a trainer config: a copy of `base_config` (the
        trainer's defaults) with this configuration's settings, for
        `training.build_model`, which reads backbone, loss, seed."""
        config = copy.deepcopy(base_config)
        config.seed = seed
        config.precision = self.precision
        config.train.batch_size = self.batch_size
        backbone, kwargs = parse_network(self.network)
        config.backbone = ml_collections.ConfigDict({"name": backbone, **kwargs})
        # The bench times the bare update, without the trainer's input noise (one
        # normal draw per step), as every number in BENCHMARKS.md was measured.
        config.loss.input_noise_std = 0.0
        config.loss.update(self.model_kwargs())
        return config


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """How much to time. Zero `eval_images` or `pgd_steps` skips that part.

    `sgld_repeats`: timed calls of a jem configuration's SGLD chain alone (after
    one untimed call), each `sgld_steps` training steps' worth of SGLD steps.
    `matmul_size`, `matmul_repeats`: the square matmul whose GFLOP/s the step's
    are read against (`flops.matmul_gflops`).
    """

    warmup: int = 3
    repeats: int = 10
    eval_images: int = 1024
    eval_batch_size: int = 256
    eval_repeats: int = 3
    pgd_steps: int = 5
    sgld_repeats: int = 3
    matmul_size: int = 2048
    matmul_repeats: int = 5

    def __post_init__(self):
        if self.warmup < 1 or self.repeats < 1 or self.eval_repeats < 1:
            raise ValueError(
                "warmup, repeats and eval_repeats must be >= 1 (the first step "
                f"traces), got {self.warmup}, {self.repeats}, {self.eval_repeats}."
            )
        if min(self.sgld_repeats, self.matmul_size, self.matmul_repeats) < 1:
            raise ValueError(
                "sgld_repeats, matmul_size and matmul_repeats must be >= 1, got "
                f"{self.sgld_repeats}, {self.matmul_size}, {self.matmul_repeats}."
            )


def configurations(
    modes: Sequence[str] = MODES,
    precisions: Sequence[str] = PRECISIONS,
    batch_sizes: Sequence[int] = (64,),
    **settings,
) -> list[BenchConfig]:
    """The grid, precision-major then batch size then mode (`settings` are the
    other `BenchConfig` fields)."""
    return [
        BenchConfig(mode=m, precision=p, batch_size=int(b), **settings)
        for p in precisions
        for b in batch_sizes
        for m in modes
    ]


def build_model(
    config: BenchConfig, base_config: ml_collections.ConfigDict, seed: int = 0
) -> HDGEClassifier:
    """The trainer's model of `config` (on top of the trainer config
    `base_config`), compiled with Adam and `config.jit_compile`, under the dtype
    policy that is current (see `hardware.precision_policy`)."""
    model = training.build_model(
        config.model_config(base_config, seed), config.num_classes, config.image_shape
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=config.jit_compile)
    return model
