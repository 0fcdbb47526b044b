"""The trainer end to end on a tiny mnist5k run: outputs, resume, errors, the CLI."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import smoke_config

from hdge_tf import data as data_lib
from hdge_tf import energy_penalty, training
from hdge_tf.bin import cli, hdge_train

REPO = Path(__file__).resolve().parents[1]


def _history_rows(workdir):
    with open(workdir / "history.csv") as f:
        return list(csv.DictReader(f))


def _last(epochs: int):
    config = smoke_config(epochs)
    config.train.select = "last"
    return config


def test_train_writes_outputs_and_resumes(tmp_path, caplog):
    metrics = training.train(_last(epochs=1), tmp_path)
    for name in ("config.json", "metrics.json", "model.keras", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "checkpoint").is_file()
    assert len(_history_rows(tmp_path)) == 1
    assert metrics["epochs"] == 1 and metrics["resumed_from_epoch"] == 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics

    # The saved model reproduces the reported test metrics, on the test images
    # with the protocol's noise (std 0.03, seeded by [eval.seed, 0]).
    model = keras.saving.load_model(tmp_path / "model.keras")
    x_test, y_test = data_lib.load_arrays("mnist5k", "test", limit=64)
    noise = np.random.default_rng([0, 0]).standard_normal(x_test.shape, np.float32)
    noisy = x_test + np.float32(0.03) * noise
    result = model.evaluate(noisy, y_test, verbose=0, return_dict=True)
    np.testing.assert_allclose(metrics["test_accuracy"], result["accuracy"], atol=1e-6)
    np.testing.assert_allclose(metrics["test_ce"], result["ce"], rtol=1e-4)
    logits = model.predict(noisy, verbose=0)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -log_p[np.arange(len(y_test)), y_test].mean()
    np.testing.assert_allclose(metrics["test_nll"], nll, rtol=1e-4)
    assert metrics["last_epoch"]["test_accuracy"] == metrics["test_accuracy"]
    assert metrics["validation_examples"] == 32
    assert int(model.queue.pointer.numpy()) == 96 % 128

    # Asking for more epochs continues from the checkpoint: optimizer steps and the
    # queue pointer carry on instead of restarting. The changed key is named.
    metrics = training.train(_last(epochs=2), tmp_path)
    assert "differ from its config.json: train.epochs 1 -> 2." in caplog.text
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 2
    assert [r["epoch"] for r in _history_rows(tmp_path)] == ["0", "1"]
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 2 * 3
    assert int(model.queue.pointer.numpy()) == (2 * 96) % 128

    # A finished workdir is evaluated, not retrained.
    before = model.get_weights()
    metrics = training.train(_last(epochs=2), tmp_path)
    assert metrics["resumed_from_epoch"] == 2
    after = keras.saving.load_model(tmp_path / "model.keras").get_weights()
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    training.train(smoke_config(epochs=1), tmp_path)
    # Every checkpoint (0 and 1): an intact older one would be resumed from.
    for shard in (tmp_path / "checkpoints").glob("ckpt-*.data-*"):
        shard.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="Cannot resume from checkpoint .*ckpt-1"):
        training.train(smoke_config(epochs=2), tmp_path)


def test_checkpoint_from_another_model_is_a_clear_error(tmp_path):
    training.train(smoke_config(epochs=1), tmp_path)
    config = smoke_config(epochs=2)
    config.backbone.filters = (4, 8, 16)
    # The run's config.json names the change before any checkpoint is read...
    with pytest.raises(
        ValueError,
        match=r"Cannot resume .*: the config differs from its config.json in keys "
        r"that change the model: backbone.filters \[4, 8\] -> \[4, 8, 16\]\. ",
    ):
        training.train(config, tmp_path)
    # ... and without config.json the checkpoint itself does not match.
    (tmp_path / "config.json").unlink()
    with pytest.raises(RuntimeError, match="different model/config"):
        training.train(config, tmp_path)


def test_bad_config_values_name_the_problem(tmp_path):
    config = smoke_config()
    config.data.name = "no_such_dataset"
    with pytest.raises(ValueError, match="no_such_dataset"):
        training.train(config, tmp_path / "a")
    config = smoke_config()
    config.train.batch_size = 256
    with pytest.raises(ValueError, match="batch_size=256 exceeds loss.queue_size=128"):
        training.train(config, tmp_path / "b")
    config = smoke_config()
    config.train.optimizer = "rmsprop"
    with pytest.raises(
        ValueError,
        match=r"train.optimizer='rmsprop': expected one of \('adam', 'sgd'\)",
    ):
        training.train(config, tmp_path / "c")


# hdge-train with overrides of several kinds (an unknown key's error is one of
# test_cli.py's cases).
@pytest.mark.slow
def test_cli_applies_overrides(tmp_path):
    workdir = tmp_path
    done = cli.call(
        hdge_train,
        [
            "--config=configs/mnist5k_hdge.py",
            f"--workdir={workdir}",
            "--config.data.limit_train=96",
            "--config.data.validation_size=32",
            "--config.data.limit_test=32",
            "--config.backbone.filters=(4,)",
            "--config.loss.queue_size=64",
            "--config.loss.formulation=reference",
            "--config.train.epochs=1",
            "--config.train.batch_size=32",
            "--config.eval.ood_sets=()",
        ],
    )
    assert done.status == 0, done.stderr[-2000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["loss"]["formulation"] == "reference"
    assert config["backbone"]["filters"] == [4]
    model = keras.saving.load_model(workdir / "model.keras")
    assert model.formulation == "reference" and model.queue.size == 64


def test_the_best_validation_epoch_is_kept_and_both_are_reported(tmp_path):
    config = smoke_config(epochs=4)
    config.train.learning_rate = 2e-2  # val accuracy moves between epochs
    model, metrics = training.train_model(config, tmp_path)
    val = [float(r["val_accuracy"]) for r in _history_rows(tmp_path)]
    best = int(np.argmax(val)) + 1  # the first of equal maxima
    assert metrics["selected_epoch"] == best and metrics["epochs"] == 4
    assert metrics["selected_val_accuracy"] == pytest.approx(val[best - 1])
    saved = keras.saving.load_model(tmp_path / "model.keras")
    for a, b in zip(saved.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(metrics["last_epoch"]) >= {"test_accuracy", "test_nll"}
    # The last epoch's metrics come from the last weights: re-derive them.
    last = smoke_config(epochs=4)
    last.train.learning_rate, last.train.select = 2e-2, "last"
    _, last_metrics = training.train_model(last, tmp_path / "last")
    # Equal up to float32 summation order (oneDNN's threads vary it by an ulp).
    for key in ("test_accuracy", "test_nll", "test_loss"):
        assert metrics["last_epoch"][key] == pytest.approx(last_metrics[key], rel=1e-5)
    if best != 4:
        assert metrics["test_nll"] != last_metrics["test_nll"]


def test_best_selection_needs_a_validation_split(tmp_path):
    config = smoke_config()
    config.data.validation_size = 0
    with pytest.raises(ValueError, match="needs a validation split"):
        training.train(config, tmp_path)
    config.train.select = "first"
    expected = r"train.select='first': expected one of \('best_val_accuracy', 'last'\)"
    with pytest.raises(ValueError, match=expected):
        training.train(config, tmp_path)


def test_trainer_and_report_agree_on_one_model(tmp_path):
    """metrics.json and hdge-eval's report use one protocol (inputs, noise, bins)."""
    from hdge_tf.evaluation import report

    config = smoke_config(epochs=1)
    config.eval.pgd.num_examples = 0
    model, metrics = training.train_model(config, tmp_path)
    result = report.run_evaluation(model, config, tmp_path / "eval")
    cls = result["classification"]
    assert metrics["test_accuracy"] == pytest.approx(cls["accuracy"], abs=1e-6)
    assert metrics["test_nll"] == pytest.approx(cls["nll"], abs=1e-6)
    assert metrics["test_ece"] == pytest.approx(result["calibration"]["ece"], abs=1e-6)
    for name in config.eval.ood_sets:
        auroc = result["ood"]["sets"][name]["scores"]["log_px"]["auroc"]
        assert metrics[f"ood_auroc_log_px_{name}"] == pytest.approx(auroc, abs=1e-6)
    assert "0.03" in metrics["protocol"]
    # The report states the OOD gate of hdge-export, set on the validation split.
    gate = result["gate"]
    validation, _ = data_lib.load_arrays(
        "mnist5k", "validation", limit=128, validation_size=32
    )
    logits = model.predict(validation, verbose=0).astype(np.float64)
    scores = np.log(np.exp(logits).sum(-1))
    assert gate["threshold"] == pytest.approx(np.quantile(scores, 0.05), abs=1e-5)
    upper = np.quantile(scores, 0.995)
    assert gate["upper_threshold"] == pytest.approx(upper, abs=1e-5)
    assert set(gate["fpr"]) == set(config.eval.ood_sets)
    assert all(0 <= rate <= 1 for rate in gate["fpr"].values())
    text = " ".join((tmp_path / "eval" / "report.md").read_text().split())
    assert "## OOD gate" in text
    assert (
        f"It also rejects log_px > {gate['upper_threshold']:.4f} (the 99.5% quantile "
        "of the validation images: higher than nearly every real image scores), any "
        "non-finite pixel, and pixels outside [-1, 1] by more than 0.1, and flat "
        "images (pixel spread below 0.02); the signature's `reason` output names "
        "the check an input failed." in text
    )


def test_warm_start_copies_backbone_and_queue_and_adds_a_replay_buffer(tmp_path):
    """train.init_from: a JEM run starts from a trained HDGE run's weights and
    queue, with a fresh replay buffer and optimizer."""
    source = tmp_path / "hdge"
    trained, _ = training.train_model(smoke_config(epochs=1), source)
    config = smoke_config(epochs=1)
    config.train.select = "last"
    config.train.init_from = str(source)
    config.loss.px_sgld_weight = 0.1
    config.loss.sgld_steps = 1
    config.loss.replay_buffer_size = 64
    warm, _ = training.train_model(config, tmp_path / "jem")
    assert warm.replay_buffer is not None and trained.replay_buffer is None
    assert int(warm.optimizer.iterations.numpy()) == 3  # a fresh optimizer
    # Checkpoint 0, the state before the first step, holds the copied weights.
    start = training.build_model(config, trained.num_classes, trained.image_shape)
    tf.train.Checkpoint(model=start).read(
        str(tmp_path / "jem" / "checkpoints" / "ckpt-0")
    ).expect_partial()
    for ours, theirs in zip(
        start.backbone.weights, trained.backbone.weights, strict=True
    ):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(
        start.queue.get_weights()[0], trained.queue.get_weights()[0]
    )

    other = smoke_config(epochs=1)
    other.backbone.filters = (4, 16)
    other.train.init_from = str(source / "model.keras")
    with pytest.raises(ValueError, match="backbone does not match"):
        training.train(other, tmp_path / "other")


def _event_tags(directory: Path) -> set[str]:
    import tensorflow as tf

    tags = set()
    for path in directory.glob("*tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_jem_run_monitors_energies_fits_chain_starts_and_warns_of_the_cap(
    tmp_path, caplog
):
    """A smoke HDGE + JEM run with class-Gaussian starts and clipped chains:
    the energy monitor is in history.csv and TensorBoard, the Gaussians are
    fitted to the training split, the buffer stays in [-1, 1], and an energy
    penalty that caps the labelled logit below 99% confidence is named."""
    config = _last(epochs=1)
    config.loss.pxy_sgld_weight = 0.3
    config.loss.energy_l2_weight = 0.1  # cap (0.3 + 1) / 0.2 = 6.5 < log(99 * 9)
    config.loss.sgld_steps = 2
    config.loss.replay_buffer_size = 100
    config.loss.sgld_clip = True
    config.loss.sgld_start = "class_gaussian"
    model, _ = training.train_model(config, tmp_path)
    assert "caps the data's labelled logit near 6.5" in caplog.text
    row = _history_rows(tmp_path)[0]
    for name in ("pxy_data_energy", "pxy_sample_energy"):
        assert np.isfinite(float(row[name]))
    assert float(row["val_top_logit"]) >= float(row["val_second_logit"])
    assert "epoch_pxy_data_energy" in _event_tags(tmp_path / "tensorboard" / "train")
    assert "epoch_top_logit" in _event_tags(tmp_path / "tensorboard" / "validation")
    _, labels = data_lib.load_arrays("mnist5k", "train", limit=128, validation_size=32)
    np.testing.assert_array_equal(
        model.chain_starts.counts.numpy(), np.bincount(labels, minlength=10)
    )
    buffer = model.replay_buffer.images.numpy()
    assert buffer.min() >= -1.0 and buffer.max() <= 1.0

    caplog.clear()
    config.loss.energy_l2_weight = 0.0002  # cap 3,250; settles at p(y|x) 0.997
    uncapped, _ = training.train_model(config, tmp_path / "uncapped")
    assert "caps the data's labelled logit" not in caplog.text
    settled = energy_penalty.settled_confidence(uncapped)
    assert settled == pytest.approx(0.997, abs=5e-4)
