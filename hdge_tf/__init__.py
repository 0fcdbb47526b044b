"""hdge-tf: hybrid discriminative-generative training of energy-based classifiers.

The public API: the energy classifier, its settings (`LossWeights`, `SGLDSettings`)
and layers, the backbones, the data loader and the entry points of training,
sampling, evaluation and export. The loss terms are in `hdge_tf.losses`, the
logits' read-outs (log p(x), log p(x, y)) in `hdge_tf.energy`.
"""

# First: importing it prefers TensorFlow's oneDNN CPU kernels, which TensorFlow
# chooses when it loads (see hdge_tf/cpu_kernels.py).
from hdge_tf import cpu_kernels  # noqa: F401

# isort: split
# Then, in an hdge-* program, TensorFlow imported with its start-up notices held
# back (see hdge_tf/startup.py).
from hdge_tf import startup  # noqa: F401

# isort: split
from hdge_tf.callbacks import SampleGrid
from hdge_tf.data import DataBundle, build_datasets, load_arrays
from hdge_tf.evaluation import run_evaluation
from hdge_tf.export import export_saved_model
from hdge_tf.generation import draw_samples
from hdge_tf.loss_weights import LossWeights
from hdge_tf.model import HDGEClassifier
from hdge_tf.networks import SmallCNN, WideResNet, build_backbone
from hdge_tf.optimization import WarmupStepDecay
from hdge_tf.queue import LogitQueue
from hdge_tf.sampling import ReplayBuffer, sgld
from hdge_tf.sgld_settings import SGLDSettings
from hdge_tf.training import train

__version__ = "0.1.0"

__all__ = [
    "DataBundle",
    "HDGEClassifier",
    "LogitQueue",
    "LossWeights",
    "ReplayBuffer",
    "SGLDSettings",
    "SampleGrid",
    "SmallCNN",
    "WarmupStepDecay",
    "WideResNet",
    "build_backbone",
    "build_datasets",
    "draw_samples",
    "export_saved_model",
    "load_arrays",
    "run_evaluation",
    "sgld",
    "train",
]
