"""hdge-tf: hybrid discriminative-generative training of energy-based classifiers."""

from hdge_tf.data import DataBundle, build_datasets, load_arrays
from hdge_tf.generation import SampleGrid, draw_samples
from hdge_tf.losses import (
    contrastive_log_px,
    contrastive_log_px_given_each_y,
    contrastive_log_px_given_y,
    cross_entropy,
    energy_l2,
    sgld_log_px,
)
from hdge_tf.model import HDGEClassifier
from hdge_tf.networks import SmallCNN, WideResNet, build_backbone
from hdge_tf.optimization import WarmupStepDecay
from hdge_tf.queue import LogitQueue
from hdge_tf.sampling import ReplayBuffer

__version__ = "0.1.0"

__all__ = [
    "DataBundle",
    "HDGEClassifier",
    "LogitQueue",
    "ReplayBuffer",
    "SampleGrid",
    "SmallCNN",
    "WarmupStepDecay",
    "WideResNet",
    "build_backbone",
    "build_datasets",
    "contrastive_log_px",
    "contrastive_log_px_given_each_y",
    "contrastive_log_px_given_y",
    "cross_entropy",
    "draw_samples",
    "energy_l2",
    "load_arrays",
    "sgld_log_px",
]
