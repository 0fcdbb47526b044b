"""HDGE on CIFAR-100 with the paper's settings (as cifar10_hdge, 100 classes).

hdge-train --config=configs/cifar100_hdge.py --workdir=/tmp/hdge/cifar100_hdge
"""

from hdge_tf.configs import cifar10_hdge


def get_config():
    config = cifar10_hdge.get_config()
    config.data.name = "cifar100"
    config.eval.ood_sets = ("svhn_cropped", "cifar10")
    return config
