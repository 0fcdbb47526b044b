"""The run directory: its layout, loading a run's model and config, resume checks."""

from pathlib import Path

import numpy as np
import pytest
from conftest import smoke_config, tiny_backbone

from hdge_tf import workdir
from hdge_tf.configs import base


def test_the_layout_names_every_output(tmp_path):
    run = workdir.RunDir(str(tmp_path))
    paths = {
        "config_file": "config.json",
        "model_file": "model.keras",
        "metrics_file": "metrics.json",
        "history_file": "history.csv",
        "curves_file": "curves.png",
        "checkpoint_dir": "checkpoints",
        "best_checkpoint_dir": "checkpoints/best",
        "tensorboard_dir": "tensorboard",
        "samples_dir": "samples",
        "eval_dir": "eval",
        "saved_model_dir": "export/saved_model",
    }
    for name, relative in paths.items():
        assert getattr(run, name) == tmp_path / relative, name
    assert run.path == tmp_path


def test_run_paths_default_each_other():
    run, model = workdir.run_paths("runs/a", None)
    assert (run.path, model) == (Path("runs/a"), Path("runs/a/model.keras"))
    run, model = workdir.run_paths(None, "elsewhere/m.keras")
    assert (run.path, model) == (Path("elsewhere"), Path("elsewhere/m.keras"))
    run, model = workdir.run_paths("runs/a", "elsewhere/m.keras")
    assert (run.path, model) == (Path("runs/a"), Path("elsewhere/m.keras"))
    with pytest.raises(ValueError, match="Pass --workdir=RUN or --model"):
        workdir.run_paths(None, None)


def test_create_refuses_a_file(tmp_path):
    workdir.RunDir(tmp_path / "new" / "run").create()
    assert (tmp_path / "new" / "run").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        workdir.RunDir(tmp_path / "file").create()


def test_load_model_says_what_is_wrong_with_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file .*missing.keras"):
        workdir.load_model(tmp_path / "missing.keras")
    for name in ("garbage.keras", "notes.txt"):
        (tmp_path / name).write_text("not a model")
        with pytest.raises(ValueError, match=f"{name} is not a .keras model archive"):
            workdir.load_model(tmp_path / name)
    model = tiny_backbone()
    model.compile(optimizer="adam", loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = workdir.load_model(tmp_path / "m.keras")
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert getattr(loaded, "optimizer", None) is None  # compile=False


def test_load_run_config_merges_the_run_into_the_defaults(tmp_path, caplog):
    run = workdir.RunDir(tmp_path)
    config = workdir.load_run_config(run, base.get_config(), {"eval.max_examples": 3})
    assert "No " in caplog.text and "config.json: using the default config" in (
        caplog.text
    )
    assert config.backbone.name == "wrn" and config.eval.max_examples == 3
    run.config_file.write_text(smoke_config().to_json_best_effort())
    config = workdir.load_run_config(run, base.get_config())
    assert config.backbone.name == "small_cnn" and config.backbone.dense_units == 16
    assert config.data.validation_size == 32 and config.eval.pgd.steps == 10
    run.config_file.write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        workdir.load_run_config(run, base.get_config())


def _run_with_checkpoint(tmp_path, config) -> workdir.RunDir:
    run = workdir.RunDir(tmp_path)
    run.config_file.write_text(config.to_json_best_effort(indent=2))
    run.checkpoint_dir.mkdir()
    (run.checkpoint_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    return run


def test_resuming_names_every_changed_key(tmp_path, caplog):
    run = _run_with_checkpoint(tmp_path, smoke_config(epochs=1))
    workdir.check_resume(run, smoke_config(epochs=1))
    assert "differ" not in caplog.text

    # Harmless changes: a warning with each key, old and new value.
    config = smoke_config(epochs=3)
    config.train.learning_rate = 1e-3
    config.eval.ood_sets = ("noise",)
    config.loss.energy_l2_weight = 0.5
    workdir.check_resume(run, config)
    assert (
        "differ from its config.json: eval.ood_sets "
        '["digits", "interp", "noise", "constant"] -> ["noise"], '
        "loss.energy_l2_weight 0.0 -> 0.5, train.epochs 1 -> 3, "
        "train.learning_rate 0.002 -> 0.001." in caplog.text
    )

    # Changes of what the checkpoint holds: an error naming only those.
    for key, value in [
        ("backbone.filters", (4, 8, 16)),
        ("backbone.dropout", 0.5),
        ("loss.queue_size", 256),
        ("loss.px_sgld_weight", 1.0),
        ("train.optimizer", "sgd"),
        ("data.name", "digits"),
        ("precision", "mixed_float16"),
    ]:
        config = smoke_config(epochs=3)
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
        with pytest.raises(ValueError, match="keys that change the model") as info:
            workdir.check_resume(run, config)
        message = str(info.value)
        assert f": {key} " in message and "train.epochs" not in message, message

    # A key the run's config.json lacks (an option added since) is named too.
    config = smoke_config(epochs=1)
    config.backbone.width_multiplier = 2
    with pytest.raises(ValueError, match=r"backbone.width_multiplier \(absent\) -> 2"):
        workdir.check_resume(run, config)


def test_without_a_checkpoint_there_is_nothing_to_resume(tmp_path):
    run = _run_with_checkpoint(tmp_path, smoke_config())
    (run.checkpoint_dir / "checkpoint").unlink()
    config = smoke_config()
    config.backbone.filters = (4, 8, 16)
    workdir.check_resume(run, config)  # e.g. a first call that failed early


def test_a_run_from_before_the_hold_out_has_no_validation_split():
    """Its config.json lacks data.validation_size: it trained on every image, so
    none may serve as held-out data (for the OOD gate), whatever today's default."""

    old = {"data": {"name": "mnist5k", "limit_train": 0}}
    assert workdir.resolve_config(base.get_config(), old).data.validation_size == 0
    new = {"data": {"name": "mnist5k", "validation_size": 300}}
    assert workdir.resolve_config(base.get_config(), new).data.validation_size == 300


_HEADER = "epoch,accuracy,loss\r\n"


@pytest.mark.parametrize(
    ("text", "kept", "damaged"),
    [
        # Two trainers on one workdir: interleaved headers, an epoch twice.
        (
            _HEADER + _HEADER + "0,0.1,2.0\r\n0,0.2,1.9\r\n1,0.3,1.8\r\n",
            ["0,0.2,1.9", "1,0.3,1.8"],
            True,
        ),
        # A row cut off by a kill mid-write, with no newline after it.
        (_HEADER + "0,0.1,2.0\r\n1,0.3,1.8\r\n2,0.", ["0,0.1,2.0", "1,0.3,1.8"], True),
        # Rows of epochs past the checkpoint: dropped without a warning.
        (
            _HEADER + "0,0.1,2.0\r\n1,0.3,1.8\r\n2,0.4,1.7\r\n3,0.5,1.6\r\n",
            ["0,0.1,2.0", "1,0.3,1.8"],
            False,
        ),
    ],
)
def test_repair_history_keeps_the_checkpointed_rows(
    tmp_path, caplog, text, kept, damaged
):
    path = tmp_path / "history.csv"
    path.write_bytes(text.encode())
    workdir.repair_history(path, epochs=2)
    # CSVLogger's line ends, so its next row lands on a line of its own.
    assert path.read_bytes().decode() == _HEADER + "".join(f"{r}\r\n" for r in kept)
    assert ("damaged line" in caplog.text) == damaged


def test_repair_history_removes_a_file_without_a_header(tmp_path, caplog):
    path = tmp_path / "history.csv"
    path.write_text("0,0.1,2.0\n1,0.2,1.9\n")
    workdir.repair_history(path, epochs=2)
    assert not path.exists()
    assert "has no header row (damaged); starting it again from epoch 3" in caplog.text


def test_atomic_writes_leave_the_old_file_when_they_fail(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    workdir.write_atomic(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'

    model = tiny_backbone()
    workdir.save_model_atomic(model, tmp_path / "model.keras")
    before = (tmp_path / "model.keras").read_bytes()

    def disk_full(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(model), "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        workdir.save_model_atomic(model, tmp_path / "model.keras")
    assert (tmp_path / "model.keras").read_bytes() == before
    # No temporary file is left behind either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.keras"]
