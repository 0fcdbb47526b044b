"""HDGE on the 4,000 embedded MNIST training images: the CPU demo.

hdge-train --config=configs/mnist5k_hdge.py --workdir=/tmp/hdge/mnist5k_hdge
"""

import ml_collections

from hdge_tf.configs import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    config.data.name = "mnist5k"
    config.data.augment = "crop"
    config.data.validation_size = 500  # 3,500 training images remain
    config.backbone = ml_collections.ConfigDict(
        {
            "name": "small_cnn",
            "filters": (32, 64, 128),
            "convs_per_stage": 1,
            "dropout": 0.0,
            # "batch" works too, HDGE + JEM included (docs/hdge_jem.md).
            "norm": "none",
        }
    )
    config.loss.queue_size = 4096
    config.train.epochs = 20
    config.train.batch_size = 64
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 200
    config.train.decay_epochs = (14, 18)
    config.eval.ood_sets = ("digits", "interp", "noise", "constant", "photos")
    # Digits tolerate far larger perturbations than CIFAR images.
    config.eval.pgd.epsilons.linf = (0.0, 0.1, 0.2, 0.4, 0.6)
    config.eval.pgd.epsilons.l2 = (0.0, 1.0, 2.0, 4.0)
    return config
