"""Defaults shared by every experiment; each config file overrides what it changes."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # "float32", "mixed_bfloat16" (CPUs with AMX, TPUs) or "mixed_float16" (GPUs).
    config.precision = "float32"

    config.data = ml_collections.ConfigDict()
    config.data.name = "mnist5k"  # "mnist5k", "digits" or a tfds name
    config.data.data_dir = ml_collections.config_dict.placeholder(str)
    config.data.download = True
    config.data.augment = "none"  # "none", "crop" or "crop_flip"
    config.data.cache = True
    config.data.shuffle_buffer = 10_000
    config.data.limit_train = 0  # 0 = all; small values for smoke runs
    config.data.limit_test = 0

    # Passed to hdge_tf.networks.build_backbone: `name` plus that network's arguments.
    config.backbone = ml_collections.ConfigDict()
    config.backbone.name = "wrn"
    config.backbone.depth = 28
    config.backbone.width = 10
    config.backbone.norm = "none"
    config.backbone.dropout = 0.0

    # Passed to hdge_tf.HDGEClassifier.
    config.loss = ml_collections.ConfigDict()
    config.loss.ce_weight = 1.0
    config.loss.pxy_contrast_weight = 1.0
    config.loss.px_contrast_weight = 0.0
    config.loss.formulation = "paper"  # or "reference" (the published code's)
    config.loss.queue_size = 65_536
    config.loss.temperature = 0.1
    config.loss.queue_init = "random"  # or "data"
    config.loss.label_smoothing = 0.0
    config.loss.input_noise_std = 0.03

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 200
    config.train.batch_size = 64
    config.train.optimizer = "adam"  # or "sgd"
    config.train.learning_rate = 1e-4
    config.train.momentum = 0.9  # sgd only
    config.train.weight_decay = 0.0
    config.train.warmup_steps = 1000
    config.train.decay_epochs = (160, 180)
    config.train.decay_factor = 0.3
    config.train.keep_checkpoints = 2
    config.train.validate = True  # evaluate on the test split after every epoch

    config.eval = ml_collections.ConfigDict()
    # Sets scored against the test split with log p(x) AUROC in metrics.json.
    config.eval.ood_sets = ()
    return config
