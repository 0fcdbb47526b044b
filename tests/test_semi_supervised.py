"""`labels_per_class`: CE and contrast on a labeled subset, SGLD log p(x) on all."""

import collections

import keras
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
import pytest
from conftest import tiny_backbone
from scipy.special import logsumexp

from hdge_tf import data
from hdge_tf.model import HDGEClassifier


def _config(**overrides) -> ml_collections.ConfigDict:
    config = {
        "name": "digits",
        "augment": "none",
        "cache": True,
        "shuffle_buffer": 0,
        "limit_train": 0,
        "limit_test": 0,
        "labels_per_class": 3,
    }
    config.update(overrides)
    return ml_collections.ConfigDict(config)


def _keys(images: np.ndarray) -> list[bytes]:
    return [image.tobytes() for image in images]


def test_batches_pair_every_image_with_the_fixed_labeled_subset():
    bundle = data.build_datasets(_config(), 16, seed=0)
    digits = data.load_digits()
    label_of = dict(zip(_keys(digits.x_train), digits.y_train, strict=True))
    assert (bundle.num_train, bundle.num_labeled) == (len(digits.y_train), 30)

    epochs = []
    for _ in range(2):
        unlabeled, labeled, labels = [], [], []
        for inputs, batch_labels in bundle.train.as_numpy_iterator():
            assert set(inputs) == {"images", "unlabeled"}
            assert len(inputs["images"]) == len(batch_labels) == 16
            unlabeled.append(inputs["unlabeled"])
            labeled.append(inputs["images"])
            labels.append(batch_labels)
        unlabeled, labeled = np.concatenate(unlabeled), np.concatenate(labeled)
        labels = np.concatenate(labels)
        # The unlabeled side is one pass over every training image.
        assert collections.Counter(_keys(unlabeled)) == collections.Counter(
            _keys(digits.x_train)
        )
        assert len(labeled) == 16 * -(-len(digits.y_train) // 16)
        # The labeled side cycles through 3 images per class, with their labels.
        keys = _keys(labeled)
        assert [label_of[k] for k in keys] == list(labels)
        subset = set(keys)
        assert len(subset) == 30
        per_class = collections.Counter(label_of[k] for k in subset)
        assert per_class == dict.fromkeys(range(10), 3)
        epochs.append(subset)
    assert epochs[0] == epochs[1]  # the subset does not change between epochs
    # ... nor with the training seed.
    other = data.build_datasets(_config(), 16, seed=5)
    inputs, _ = next(iter(other.train.repeat(4).as_numpy_iterator()))
    assert set(_keys(inputs["images"])) <= epochs[0]


def test_bad_labels_per_class_names_the_problem():
    with pytest.raises(ValueError, match="labels_per_class=500 but class 0 has only"):
        data.build_datasets(_config(labels_per_class=500), 16)
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        data.build_datasets(_config(labels_per_class=2), 64)
    with pytest.raises(ValueError, match="labels_per_class must be >= 0"):
        data.build_datasets(_config(labels_per_class=-1), 16)


def _model(**kwargs):
    model = HDGEClassifier(
        tiny_backbone(),
        queue_size=40,
        sgld_steps=0,
        reinit_freq=1.0,
        replay_buffer_size=4000,
        **kwargs,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def test_ce_sees_the_labeled_batch_and_px_sgld_the_unlabeled_one(separable_data):
    images, labels = separable_data
    labeled, labels, unlabeled = images[:8], labels[:8], images[40:52]
    model, twin = _model(px_sgld_weight=1.0), _model(px_sgld_weight=1.0)
    before = model.replay_buffer.images.numpy().copy()
    logs = model.train_on_batch(
        {"images": labeled, "unlabeled": unlabeled}, labels, return_dict=True
    )
    after = model.replay_buffer.images.numpy()
    rows = np.flatnonzero((after != before).reshape(len(after), -1).any(-1))
    assert len(rows) == 12  # one chain per unlabeled image

    logits = twin(labeled).numpy().astype(np.float64)
    log_probs = logits - logsumexp(logits, axis=-1, keepdims=True)
    np.testing.assert_allclose(
        logs["ce"], -log_probs[np.arange(8), labels].mean(), rtol=1e-4
    )
    data_density = logsumexp(twin(unlabeled).numpy().astype(np.float64), axis=-1)
    sample_density = logsumexp(twin(after[rows]).numpy().astype(np.float64), axis=-1)
    np.testing.assert_allclose(
        logs["px_sgld"], sample_density.mean() - data_density.mean(), rtol=1e-4
    )
    # The labeled batch alone joined the queue.
    assert int(model.queue.pointer.numpy()) == 8


def test_pxy_sgld_chains_follow_the_labeled_batch(separable_data):
    images, labels = separable_data
    model = _model(pxy_sgld_weight=1.0)
    before = model.replay_buffer.images.numpy().copy()
    model.train_on_batch({"images": images[:8], "unlabeled": images[40:52]}, labels[:8])
    after = model.replay_buffer.images.numpy()
    rows = np.flatnonzero((after != before).reshape(len(after), -1).any(-1))
    np.testing.assert_array_equal(np.sort(rows // 1000), np.sort(labels[:8]))


def test_unknown_input_keys_are_an_error(separable_data):
    images, labels = separable_data
    with pytest.raises(ValueError, match="got keys \\['image', 'unlabeled'\\]"):
        _model().train_on_batch({"image": images[:8], "unlabeled": images}, labels[:8])


def test_trainer_runs_semi_supervised(tmp_path):
    from test_training import smoke_config

    from hdge_tf import training

    config = smoke_config(epochs=1)
    config.data.labels_per_class = 2
    config.train.batch_size = 16
    config.loss.px_sgld_weight = 1.0
    config.loss.sgld_steps = 2
    config.loss.replay_buffer_size = 200
    config.train.sample_every_epochs = 1
    model, metrics = training.train_model(config, tmp_path)
    # 96 training images in batches of 16: six steps.
    assert int(model.optimizer.iterations.numpy()) == 6
    assert metrics["labeled_examples"] == 20
    assert np.isfinite(metrics["test_ce"])
    grid = plt.imread(tmp_path / "samples" / "samples_epoch001.png")
    assert grid.ndim == 3 and grid.std() > 0.05  # a drawn grid, not a blank page
