"""Resuming with another config: blocking keys are an error, others a warning."""

import pytest
from conftest import smoke_config

from hdge_tf.resume_check import check_resume
from hdge_tf.run_dir import RunDir


def _run_with_checkpoint(tmp_path, config) -> RunDir:
    run = RunDir(tmp_path)
    run.config_file.write_text(config.to_json_best_effort(indent=2))
    run.checkpoint_dir.mkdir()
    (run.checkpoint_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    return run


def test_resuming_names_every_changed_key(tmp_path, caplog):
    run = _run_with_checkpoint(tmp_path, smoke_config(epochs=1))
    check_resume(run, smoke_config(epochs=1))
    assert "differ" not in caplog.text

    # Harmless changes: a warning with each key, old and new value.
    config = smoke_config(epochs=3)
    config.train.learning_rate = 1e-3
    config.eval.ood_sets = ("noise",)
    config.loss.energy_l2_weight = 0.5
    check_resume(run, config)
    assert (
        "differ from its config.json: eval.ood_sets "
        '["digits", "interp", "noise", "constant", "photos"] -> ["noise"], '
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
            check_resume(run, config)
        message = str(info.value)
        assert f": {key} " in message and "train.epochs" not in message, message

    # A key the run's config.json lacks (an option added since) is named too.
    config = smoke_config(epochs=1)
    config.backbone.width_multiplier = 2
    with pytest.raises(ValueError, match=r"backbone.width_multiplier \(absent\) -> 2"):
        check_resume(run, config)


def test_without_a_checkpoint_there_is_nothing_to_resume(tmp_path):
    run = _run_with_checkpoint(tmp_path, smoke_config())
    (run.checkpoint_dir / "checkpoint").unlink()
    config = smoke_config()
    config.backbone.filters = (4, 8, 16)
    check_resume(run, config)  # e.g. a first call that failed early
