"""HDGE on the embedded MNIST images with a Keras user's kind of network:
keras.applications' MobileNetV3Small (BatchNorm after every conv), untrained,
the 28x28 digits resized to its 32x32 minimum.

hdge-train --config=configs/mnist5k_hdge_mobilenet.py --workdir=/tmp/hdge/mnv3
"""

import ml_collections

from hdge_tf.configs import mnist5k_hdge


def mobilenet() -> ml_collections.ConfigDict:
    """The backbone section: ReLU instead of hard-swish ("minimalistic"), whose
    input gradients SGLD chains can follow."""
    return ml_collections.ConfigDict(
        {
            "name": "keras_application",
            "application": "MobileNetV3Small",
            "application_kwargs": {"minimalistic": True},
        }
    )


def get_config() -> ml_collections.ConfigDict:
    config = mnist5k_hdge.get_config()
    config.backbone = mobilenet()
    return config
