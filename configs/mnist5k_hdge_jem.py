"""HDGE+JEM on the embedded MNIST images: CE + contrastive log p(x|y) + JEM's SGLD
log p(x), small enough for a 2-core CPU (measured in README.md).

    hdge-train --config=configs/mnist5k_hdge_jem.py --workdir=/tmp/hdge/mnist5k_jem
    hdge-sample --workdir=/tmp/hdge/mnist5k_jem --mode=unconditional
"""

from hdge_tf.configs import mnist5k_hdge


def get_config():
    config = mnist5k_hdge.get_config()
    config.loss.px_sgld_weight = 1.0
    config.loss.sgld_steps = 20
    config.loss.replay_buffer_size = 10_000
    config.loss.energy_l2_weight = 0.1
    config.train.sample_every_epochs = 5
    return config
