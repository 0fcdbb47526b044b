"""The circular logit queue: pointer, wrap-around, contents, limits, saving."""

import numpy as np
import pytest
import tensorflow as tf
from keras_checks import run_layer_checks

from hdge_tf.queue import LogitQueue


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_random_init_is_unit_columns_and_full():
    queue = LogitQueue(size=20, num_classes=3)
    assert queue.logits.shape == (3, 20)
    np.testing.assert_allclose(
        np.linalg.norm(queue.logits.numpy(), axis=0), 1, rtol=1e-5
    )
    assert queue.valid_mask() is None and int(queue.num_filled.numpy()) == 20


def test_writes_wrap_around_with_partial_batches():
    """Batches of 7 and a last partial 3 into K = 10, tracked against numpy."""
    queue = LogitQueue(size=10, num_classes=3, init="data")
    expected = np.zeros((10, 3), np.float32)
    pointer, rng = 0, np.random.default_rng(1)
    write = tf.function(queue.enqueue)  # compiled like train_step, any batch size
    for n in (7, 7, 3, 7):
        batch = rng.normal(size=(n, 3)).astype(np.float32) * 5
        write(batch)
        for row in _unit_rows(batch):
            expected[pointer] = row
            pointer = (pointer + 1) % 10
        assert int(queue.pointer.numpy()) == pointer
        np.testing.assert_allclose(queue.logits.numpy().T, expected, rtol=1e-6)
    assert int(queue.num_filled.numpy()) == 10


def test_data_init_masks_unwritten_slots():
    queue = LogitQueue(size=10, num_classes=2, init="data")
    np.testing.assert_array_equal(queue.valid_mask().numpy(), np.zeros(10, bool))
    queue.enqueue(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(queue.valid_mask().numpy(), np.arange(10) < 4)


def test_batch_larger_than_queue_is_an_error():
    queue = LogitQueue(size=4, num_classes=2)
    with pytest.raises(
        ValueError, match="Batch size 5 exceeds the logit queue size K=4"
    ):
        queue.enqueue(np.ones((5, 2), np.float32))


def test_bad_arguments():
    with pytest.raises(ValueError, match="queue init 'zeros'"):
        LogitQueue(size=4, num_classes=2, init="zeros")
    with pytest.raises(ValueError, match="Queue size must be positive"):
        LogitQueue(size=0, num_classes=2)


@pytest.mark.parametrize("init", ["random", "data"])
def test_queue_passes_the_keras_layer_checks(init, tmp_path):
    """Config round trip, the rows, pointer and fill count in `.keras`, and float32
    rows under any policy."""

    def enqueue(queue):
        queue.enqueue(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32))

    queue = run_layer_checks(
        lambda: LogitQueue(size=7, num_classes=4, init=init, name="queue"),
        tmp_path,
        update=enqueue,
    )
    assert int(queue.pointer.numpy()) == 3
