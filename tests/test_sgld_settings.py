"""SGLDSettings: defaults, validation, serialization on its own and inside
HDGEClassifier's config, and `.keras` files written with the flat SGLD keys."""

import dataclasses
import json
import math
import zipfile

import keras
import ml_collections
import numpy as np
import pytest
from conftest import tiny_backbone
from keras_checks import assert_same_weights

from hdge_tf import HDGEClassifier, SGLDSettings, loss_weights, training
from hdge_tf.configs import base
from hdge_tf.sgld_settings import FLAT_KEYS, split_flat

# HDGEClassifier.get_config()'s own keys before the settings were one object,
# with the SGLD ones flat: the layout of `.keras` files saved until then.
FLAT_LAYOUT = (
    "backbone",
    "queue_size",
    "temperature",
    "ce_weight",
    "pxy_contrast_weight",
    "px_contrast_weight",
    "formulation",
    "label_smoothing",
    "input_noise_std",
    "queue_init",
    "px_sgld_weight",
    "pxy_sgld_weight",
    "sgld_steps",
    "sgld_step_size",
    "sgld_noise_std",
    "replay_buffer_size",
    "reinit_freq",
    "energy_l2_weight",
    "divergence_threshold",
    "seed",
    "sgld_clip",
    "sgld_batch_size",
    "sgld_start",
    "sgld_start_uniform_fraction",
    "px_sgld_conditional_chains",
    "image_shape",
)
# Every field away from its default.
CUSTOM = SGLDSettings(
    steps=2,
    step_size=0.5,
    noise_std=0.02,
    buffer_size=40,
    reinit_freq=0.2,
    clip=True,
    batch_size=8,
    start="class_gaussian",
    start_uniform_fraction=0.3,
    px_conditional_chains=True,
)


def test_defaults_are_the_trainer_configs_and_jems():
    """The trainer's flat `loss.*` defaults (configs/base.py) are the settings'."""
    _, settings = split_flat(base.get_config().loss)
    assert settings == SGLDSettings()
    assert (settings.steps, settings.step_size, settings.noise_std) == (20, 1.0, 0.01)
    assert set(FLAT_KEYS.values()) == set(SGLDSettings().get_config())


def test_settings_round_trip_alone():
    assert SGLDSettings.from_config(CUSTOM.get_config()) == CUSTOM
    stored = json.loads(json.dumps(keras.saving.serialize_keras_object(CUSTOM)))
    assert stored["registered_name"] == "hdge_tf>SGLDSettings"
    assert keras.saving.deserialize_keras_object(stored) == CUSTOM
    with pytest.raises(dataclasses.FrozenInstanceError):
        CUSTOM.steps = 3  # frozen: a model's settings cannot drift


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", -1),
        ("steps", 2.5),
        ("steps", "20"),
        ("step_size", -0.1),
        ("step_size", math.nan),
        ("noise_std", math.inf),
        ("buffer_size", 0),
        ("reinit_freq", 1.5),
        ("clip", "yes"),
        ("batch_size", -8),
        ("start", "gaussian"),
        ("start_uniform_fraction", -0.1),
        ("px_conditional_chains", None),
        ("every", 0),
        ("pass_mode", "eval"),
    ],
)
def test_each_invalid_field_names_itself_and_the_value(field, value):
    with pytest.raises(ValueError, match=rf"SGLDSettings\.{field} must be .*{value}"):
        SGLDSettings(**{field: value})
    # The model reports the same, given the settings as a dict.
    with pytest.raises(ValueError, match=rf"SGLDSettings\.{field} must be"):
        HDGEClassifier(tiny_backbone(), sgld={field: value})


def test_values_from_configs_are_normalized():
    settings = SGLDSettings(steps=20.0, buffer_size=np.int64(40), clip=np.bool_(1))
    assert settings == SGLDSettings(steps=20, buffer_size=40, clip=True)
    assert type(settings.steps) is int and type(settings.clip) is bool


def test_flat_keyword_arguments_name_their_new_form():
    with pytest.raises(
        TypeError,
        match=r"sgld_steps, reinit_freq moved: pass "
        r"sgld=hdge_tf.SGLDSettings\(steps=\.\.\., reinit_freq=\.\.\.\)",
    ):
        HDGEClassifier(tiny_backbone(), sgld_steps=3, reinit_freq=0.1)
    # The loss weights stay flat, beside the paper's other hyperparameters.
    model = HDGEClassifier(tiny_backbone(), queue_size=40, px_sgld_weight=1.0)
    assert model.sgld == SGLDSettings() and model.replay_buffer.size == 10000


def test_the_trainer_builds_the_settings_from_its_flat_keys():
    config = base.get_config()
    config.backbone = ml_collections.ConfigDict({"name": "small_cnn"})
    config.loss.update(queue_size=64, pxy_sgld_weight=1.0, sgld_steps=3)
    config.loss.update(replay_buffer_size=40, sgld_clip=True, reinit_freq=0.5)
    model = training.build_model(config, 4, (8, 8, 1))
    assert model.sgld == SGLDSettings(
        steps=3, buffer_size=40, clip=True, reinit_freq=0.5
    )


def _trained(images, labels) -> HDGEClassifier:
    model = HDGEClassifier(
        tiny_backbone(), queue_size=40, px_sgld_weight=1.0, sgld=CUSTOM, seed=3
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit_chain_starts(images, labels)
    model.fit(images[:32], labels[:32], batch_size=16, epochs=1, verbose=0)
    return model


def _rewrite_config(path, rewrite) -> None:
    """Replaces the model config inside the `.keras` zip at `path` by
    `rewrite(config)`, keeping every other member (weights, metadata) as is."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    stored = json.loads(members["config.json"])
    stored["config"] = rewrite(stored["config"])
    members["config.json"] = json.dumps(stored).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _flat_layout(config: dict) -> dict:
    """`config` as models saved before SGLDSettings wrote it: its fields flat, the
    loss weights too (`loss_weights.FLAT_KEYS`), and without the keys added
    since (energy_scale_rate, sgld_every, sgld_pass_mode: their defaults are
    what those models did)."""
    fields = config["sgld"]["config"]
    moved = ("sgld", "loss_weights", "energy_scale_rate")
    flat = {k: v for k, v in config.items() if k not in moved}
    weights = config["loss_weights"]["config"]
    flat.update({key: weights[term] for key, term in loss_weights.FLAT_KEYS.items()})
    newer = ("sgld_every", "sgld_pass_mode")
    flat.update(
        {key: fields[field] for key, field in FLAT_KEYS.items() if key not in newer}
    )
    return flat


def _assert_same_model(loaded, model, images):
    assert loaded.sgld == model.sgld
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    for part in ("replay_buffer", "chain_starts", "queue"):
        assert_same_weights(getattr(loaded, part), getattr(model, part))
    assert int(loaded.optimizer.iterations.numpy()) == 2


def test_new_and_flat_keras_files_load_the_same_model(separable_data, tmp_path):
    images, labels = separable_data
    model = _trained(images, labels)
    path = tmp_path / "model.keras"
    model.save(path)
    _assert_same_model(keras.saving.load_model(path), model, images)

    _rewrite_config(path, _flat_layout)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    assert set(FLAT_LAYOUT) <= set(config) and "sgld" not in config
    assert set(config) - set(FLAT_LAYOUT) <= {"name", "trainable", "dtype"}
    loaded = keras.saving.load_model(path)
    _assert_same_model(loaded, model, images)
    # It trains on as the model it was saved from does.
    for each in (loaded, model):
        each.fit(images[:16], labels[:16], batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(
        loaded.replay_buffer.images.numpy(), model.replay_buffer.images.numpy()
    )
    # Saved again, it writes the new layout.
    assert loaded.get_config()["sgld"]["config"] == CUSTOM.get_config()


def test_a_config_with_both_layouts_is_refused():
    config = HDGEClassifier(tiny_backbone(), sgld=CUSTOM).get_config()
    config["sgld_steps"] = 5
    with pytest.raises(
        ValueError, match=r"both 'sgld' and the flat keys \['sgld_steps'\]"
    ):
        HDGEClassifier.from_config(config)
    # A flat config missing keys added later (e.g. sgld_clip) gets their defaults.
    flat = _flat_layout(HDGEClassifier(tiny_backbone(), sgld=CUSTOM).get_config())
    del flat["sgld_clip"], flat["sgld_start"], flat["px_sgld_conditional_chains"]
    settings = HDGEClassifier.from_config(flat).sgld
    assert (settings.clip, settings.start, settings.px_conditional_chains) == (
        False,
        "uniform",
        False,
    )
    assert settings.steps == CUSTOM.steps


def test_the_model_serializes_with_keras(tmp_path):
    model = HDGEClassifier(tiny_backbone(), queue_size=40, sgld=CUSTOM)
    stored = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    again = keras.saving.deserialize_keras_object(stored)
    assert type(again) is HDGEClassifier and again.sgld == CUSTOM
