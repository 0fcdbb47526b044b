"""HDGE + JEM (the demo recipe, configs/mnist5k_hdge_jem.py) with
keras.applications' MobileNetV3Small: a BatchNorm backbone, whose SGLD terms
score data and samples in inference mode (loss.sgld_pass_mode "auto").

hdge-train --config=configs/mnist5k_hdge_jem_mobilenet.py --workdir=/tmp/hdge/mnv3_jem
"""

import ml_collections

from hdge_tf.configs import mnist5k_hdge_jem, mnist5k_hdge_mobilenet


def get_config() -> ml_collections.ConfigDict:
    config = mnist5k_hdge_jem.get_config()
    config.backbone = mnist5k_hdge_mobilenet.mobilenet()
    return config
