"""`labels_per_class`: CE and contrast on a labeled subset, SGLD log p(x) on all."""

import collections

import keras
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
import pytest
from conftest import smoke_config, tiny_backbone
from scipy.special import logsumexp

from hdge_tf import data
from hdge_tf.model import HDGEClassifier
from hdge_tf.sgld_settings import SGLDSettings


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


def _semi_epochs(bundle, first: int, end: int, seed: int) -> list[dict]:
    """`train_epochs(first, end, seed)` read by one iterator, cut into epochs of
    `steps_per_epoch` batches: per epoch the stacked images, unlabeled and labels."""
    batches = list(bundle.train_epochs(first, end, seed).as_numpy_iterator())
    steps = bundle.steps_per_epoch
    assert len(batches) == (end - first) * steps
    epochs = []
    for i in range(0, len(batches), steps):
        epoch = batches[i : i + steps]
        for inputs, _ in epoch:
            assert set(inputs) == {"images", "unlabeled"}
        epochs.append(
            {
                "images": np.stack([inputs["images"] for inputs, _ in epoch]),
                "unlabeled": np.stack([inputs["unlabeled"] for inputs, _ in epoch]),
                "labels": np.stack([labels for _, labels in epoch]),
            }
        )
    return epochs


def test_batches_pair_every_image_with_the_fixed_labeled_subset():
    bundle = data.build_datasets(_config(), 16, seed=0)
    digits = data.load_digits()
    label_of = dict(zip(_keys(digits.x_train), digits.y_train, strict=True))
    assert (bundle.num_train, bundle.num_labeled) == (len(digits.y_train), 30)
    # 1433 images in full batches of 16: 89 steps, the last 9 images dropped.
    assert bundle.steps_per_epoch == len(digits.y_train) // 16 == 89

    subsets, orders, dropped = [], [], []
    for epoch in _semi_epochs(bundle, 0, 2, seed=0):
        assert epoch["images"].shape == epoch["unlabeled"].shape == (89, 16, 32, 32, 1)
        assert epoch["labels"].shape == (89, 16)
        unlabeled = epoch["unlabeled"].reshape(-1, 32, 32, 1)
        labeled = epoch["images"].reshape(-1, 32, 32, 1)
        labels = epoch["labels"].ravel()
        # The unlabeled side is one pass over the training images, less the
        # dropped partial batch.
        unlabeled_keys = collections.Counter(_keys(unlabeled))
        assert len(unlabeled_keys) == 89 * 16
        assert not unlabeled_keys - collections.Counter(_keys(digits.x_train))
        dropped.append(set(label_of) - set(unlabeled_keys))
        # The labeled side cycles through 3 images per class, with their labels,
        # each pass of 30 a new order of the whole subset.
        keys = _keys(labeled)
        assert [label_of[k] for k in keys] == list(labels)
        subset = set(keys)
        assert len(subset) == 30
        per_class = collections.Counter(label_of[k] for k in subset)
        assert per_class == dict.fromkeys(range(10), 3)
        passes = [keys[i : i + 30] for i in range(0, len(keys) - 29, 30)]
        assert len(passes) == 47
        assert all(set(one_pass) == subset for one_pass in passes)
        assert len({tuple(one_pass) for one_pass in passes}) > 40
        subsets.append(subset)
        orders.append((_keys(unlabeled), keys))
    assert subsets[0] == subsets[1]  # the subset does not change between epochs
    # Both sides are reshuffled between epochs.
    assert orders[0][0] != orders[1][0] and dropped[0] != dropped[1]
    assert orders[0][1] != orders[1][1]
    # ... nor with the training seed.
    other = data.build_datasets(_config(), 16, seed=5)
    inputs, _ = next(iter(other.train.as_numpy_iterator()))
    assert set(_keys(inputs["images"])) <= subsets[0]
    other_keys = _keys(
        _semi_epochs(other, 0, 1, seed=5)[0]["images"].reshape(-1, 32, 32, 1)
    )
    assert set(other_keys) == subsets[0]
    assert other_keys != orders[0][1]


def test_semi_supervised_epochs_are_reproducible_one_by_one():
    config = _config(augment="crop", limit_train=400)
    bundle = data.build_datasets(config, 16, seed=2)
    assert (bundle.num_train, bundle.num_labeled, bundle.steps_per_epoch) == (
        400,
        30,
        25,
    )
    epochs = _semi_epochs(bundle, 0, 3, seed=2)
    for e, epoch in enumerate(epochs):
        alone = _semi_epochs(bundle, e, e + 1, seed=2)[0]
        for key in ("images", "unlabeled", "labels"):
            np.testing.assert_array_equal(epoch[key], alone[key], err_msg=key)
    # The same batches however often an epoch is read, and from another bundle.
    rebuilt = data.build_datasets(config, 16, seed=2)
    for again in (
        _semi_epochs(bundle, 1, 2, seed=2)[0],
        _semi_epochs(rebuilt, 1, 2, seed=2)[0],
    ):
        for key in ("images", "unlabeled", "labels"):
            np.testing.assert_array_equal(epochs[1][key], again[key], err_msg=key)
    train = [list(bundle.train.as_numpy_iterator()) for _ in range(2)]
    for first, second in zip(*train, strict=True):
        np.testing.assert_array_equal(first[0]["images"], second[0]["images"])
        np.testing.assert_array_equal(first[0]["unlabeled"], second[0]["unlabeled"])
        np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(
        np.stack([inputs["images"] for inputs, _ in train[0]]), epochs[0]["images"]
    )
    # Epochs differ from each other and from another seed's, on both sides.
    other = _semi_epochs(bundle, 1, 2, seed=3)[0]
    for key in ("images", "unlabeled", "labels"):
        assert not np.array_equal(epochs[0][key], epochs[1][key]), key
        assert not np.array_equal(epochs[1][key], epochs[2][key]), key
        assert not np.array_equal(epochs[1][key], other[key]), key


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
        sgld=SGLDSettings(steps=0, reinit_freq=1.0, buffer_size=4000),
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


@pytest.mark.slow
def test_trainer_runs_semi_supervised(tmp_path):
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
