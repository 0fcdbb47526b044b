"""LossWeights: defaults, the mapping by term name, serialization on its own and
inside HDGEClassifier's config, and the flat `*_weight` form (keyword arguments,
trainer configs, older model configs)."""

import json

import keras
import ml_collections
import numpy as np
import pytest
from conftest import tiny_backbone

from hdge_tf import HDGEClassifier, LossWeights, training
from hdge_tf.configs import base
from hdge_tf.loss_weights import FLAT_KEYS, TERMS, split_flat

CUSTOM = LossWeights(
    ce=0.5, pxy_contrast=0.25, px_contrast=0.1, px_sgld=1.0, pxy_sgld=0.5, energy_l2=0.2
)


def test_defaults_are_hdge_and_the_weights_read_by_term_name():
    weights = LossWeights()
    assert dict(weights) == {
        "ce": 1.0,
        "pxy_contrast": 1.0,
        "px_contrast": 0.0,
        "px_sgld": 0.0,
        "pxy_sgld": 0.0,
        "energy_l2": 0.0,
    }
    assert tuple(weights) == TERMS and weights["px_sgld"] == 0.0
    assert not weights.sgld_on and CUSTOM.sgld_on
    with pytest.raises(KeyError):
        weights["px_data_energy"]
    # Numbers from configs become plain floats, so equal weights compare equal.
    assert LossWeights(ce=np.float32(1), pxy_contrast=1) == weights
    assert type(LossWeights(ce=np.int64(2)).ce) is float


def test_round_trips_through_keras_serialization():
    stored = json.loads(json.dumps(keras.saving.serialize_keras_object(CUSTOM)))
    assert keras.saving.deserialize_keras_object(stored) == CUSTOM
    assert LossWeights.from_config(CUSTOM.get_config()) == CUSTOM


def test_the_model_takes_the_object_a_dict_or_the_flat_arguments():
    flat = {key: CUSTOM[term] for key, term in FLAT_KEYS.items()}
    models = [
        HDGEClassifier(tiny_backbone(), queue_size=40, loss_weights=CUSTOM),
        HDGEClassifier(tiny_backbone(), queue_size=40, loss_weights=dict(CUSTOM)),
        HDGEClassifier(tiny_backbone(), queue_size=40, **flat),
    ]
    assert all(model.loss_weights == CUSTOM for model in models)
    with pytest.raises(TypeError, match="not both"):
        HDGEClassifier(tiny_backbone(), loss_weights=CUSTOM, ce_weight=1.0)
    # Without an SGLD term the energy penalty has nothing to act on.
    alone = HDGEClassifier(tiny_backbone(), loss_weights={"energy_l2": 0.3})
    assert alone.loss_weights == LossWeights()


def test_the_config_holds_one_object_and_flat_configs_load():
    model = HDGEClassifier(tiny_backbone(), queue_size=40, loss_weights=CUSTOM)
    config = model.get_config()
    assert config["loss_weights"]["config"] == CUSTOM.get_config()
    assert not set(FLAT_KEYS) & set(config)
    assert HDGEClassifier.from_config(config).loss_weights == CUSTOM

    # Models saved before the weights were one object: flat keys, some missing.
    flat = {k: v for k, v in config.items() if k != "loss_weights"}
    flat.update(ce_weight=0.5, px_sgld_weight=1.0)
    loaded = HDGEClassifier.from_config(flat)
    assert loaded.loss_weights == LossWeights(ce=0.5, px_sgld=1.0)
    assert loaded.replay_buffer is not None

    both = {**config, "ce_weight": 1.0}
    with pytest.raises(
        ValueError, match=r"both 'loss_weights' and the flat keys \['ce_weight'\]"
    ):
        HDGEClassifier.from_config(both)


def test_the_trainer_builds_the_weights_from_its_flat_keys():
    rest, weights = split_flat({"queue_size": 8, "ce_weight": 0.5})
    assert rest == {"queue_size": 8} and weights == LossWeights(ce=0.5)
    assert split_flat({"queue_size": 8}) == ({"queue_size": 8}, None)

    config = base.get_config()
    config.backbone = ml_collections.ConfigDict({"name": "small_cnn"})
    config.loss.update(queue_size=64, pxy_sgld_weight=1.0, energy_l2_weight=0.01)
    config.loss.update(replay_buffer_size=40)
    model = training.build_model(config, 4, (8, 8, 1))
    assert model.loss_weights == LossWeights(pxy_sgld=1.0, energy_l2=0.01)
