"""The cross-entropy baseline of the mnist5k demo (no contrastive term).

hdge-train --config=configs/mnist5k_ce.py --workdir=/tmp/hdge/mnist5k_ce
"""

from hdge_tf.configs import mnist5k_hdge


def get_config():
    config = mnist5k_hdge.get_config()
    config.loss.pxy_contrast_weight = 0.0
    return config
