"""HDGE on CIFAR-10 with the accuracy-oriented recipe of the published code's README
(paper Table 1 uses BatchNorm): WRN-28-10 with BatchNorm and dropout 0.3, SGD with
momentum 0.9, learning rate 0.1, no warmup, batch 128, coupled (PyTorch) L2 weight
decay 5e-4. That README command overrides nothing else, so the rest are the code's
defaults: ×0.3 at epochs 160 and 180, 200 epochs, σ = 0.03 input noise, CE and
contrastive weights 1, K = 65,536, τ = 0.1.

    hdge-train --config=configs/cifar10_hdge_sgd.py --workdir=/tmp/hdge/cifar10_sgd
"""

from hdge_tf.configs import cifar10_hdge


def get_config():
    config = cifar10_hdge.get_config()
    config.backbone.norm = "batch"
    config.backbone.dropout = 0.3
    config.train.optimizer = "sgd"
    config.train.learning_rate = 0.1
    config.train.momentum = 0.9
    config.train.batch_size = 128
    config.train.weight_decay = 5e-4
    config.train.weight_decay_mode = "l2"
    config.train.warmup_steps = 0  # the README passes --warmup_iters -1: none
    config.train.decay_epochs = (160, 180)
    config.train.decay_factor = 0.3
    config.train.epochs = 200
    return config
