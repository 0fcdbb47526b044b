"""HDGE on CIFAR-10 with the paper's settings (WRN-28-10 without BatchNorm, Adam 1e-4,
1,000 warmup iterations, ×0.3 at epochs 160 and 180, 200 epochs, σ = 0.03,
K = 65,536, τ = 0.1). Downloads CIFAR-10 through tfds on first use.

    hdge-train --config=configs/cifar10_hdge.py --workdir=/tmp/hdge/cifar10_hdge
"""

from hdge_tf.configs import base


def get_config():
    config = base.get_config()
    config.data.name = "cifar10"
    config.data.augment = "crop_flip"
    config.eval.ood_sets = ("svhn_cropped", "cifar100")
    return config
