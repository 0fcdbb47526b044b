"""The cross-entropy baseline on CIFAR-10, same network and schedule as cifar10_hdge.

hdge-train --config=configs/cifar10_ce.py --workdir=/tmp/hdge/cifar10_ce
"""

from hdge_tf.configs import cifar10_hdge


def get_config():
    config = cifar10_hdge.get_config()
    config.loss.pxy_contrast_weight = 0.0
    return config
