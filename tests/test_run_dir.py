"""A run directory's layout, the programs' --workdir/--model paths and loading
a model file back."""

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_backbone

from hdge_tf.run_dir import RunDir, load_model, run_paths


def test_the_layout_names_every_output(tmp_path):
    run = RunDir(str(tmp_path))
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
    run, model = run_paths("runs/a", None)
    assert (run.path, model) == (Path("runs/a"), Path("runs/a/model.keras"))
    run, model = run_paths(None, "elsewhere/m.keras")
    assert (run.path, model) == (Path("elsewhere"), Path("elsewhere/m.keras"))
    run, model = run_paths("runs/a", "elsewhere/m.keras")
    assert (run.path, model) == (Path("runs/a"), Path("elsewhere/m.keras"))
    with pytest.raises(ValueError, match="Pass --workdir=RUN or --model"):
        run_paths(None, None)


def test_create_refuses_a_file(tmp_path):
    RunDir(tmp_path / "new" / "run").create()
    assert (tmp_path / "new" / "run").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        RunDir(tmp_path / "file").create()


def test_load_model_says_what_is_wrong_with_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file .*missing.keras"):
        load_model(tmp_path / "missing.keras")
    for name in ("garbage.keras", "notes.txt"):
        (tmp_path / name).write_text("not a model")
        with pytest.raises(ValueError, match=f"{name} is not a .keras model archive"):
            load_model(tmp_path / name)
    model = tiny_backbone()
    model.compile(optimizer="adam", loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert getattr(loaded, "optimizer", None) is None  # compile=False
