"""A run's config read back: defaults, the run's config.json, overrides."""

import json

import pytest
from conftest import smoke_config

from hdge_tf.configs import base, mnist5k_hdge
from hdge_tf.run_config import load_run_config, resolve_config
from hdge_tf.run_dir import RunDir


def test_load_run_config_merges_the_run_into_the_defaults(tmp_path, caplog):
    run = RunDir(tmp_path)
    config = load_run_config(run, base.get_config(), {"eval.max_examples": 3})
    assert "No " in caplog.text and "config.json: using the default config" in (
        caplog.text
    )
    assert config.backbone.name == "wrn" and config.eval.max_examples == 3
    run.config_file.write_text(smoke_config().to_json_best_effort())
    config = load_run_config(run, base.get_config())
    assert config.backbone.name == "small_cnn" and config.backbone.dense_units == 16
    assert config.data.validation_size == 32 and config.eval.pgd.steps == 10
    run.config_file.write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_run_config(run, base.get_config())


def test_a_run_from_before_the_hold_out_has_no_validation_split():
    """Its config.json lacks data.validation_size: it trained on every image, so
    none may serve as held-out data (for the OOD gate), whatever today's default."""

    old = {"data": {"name": "mnist5k", "limit_train": 0}}
    assert resolve_config(base.get_config(), old).data.validation_size == 0
    new = {"data": {"name": "mnist5k", "validation_size": 300}}
    assert resolve_config(base.get_config(), new).data.validation_size == 300


def test_resolve_config_layers_defaults_run_and_overrides():
    run = json.loads(mnist5k_hdge.get_config().to_json())
    del run["eval"]["pgd"]  # a run from before the option existed
    run["eval"]["ood_sets"] = ["digits"]
    config = resolve_config(
        base.get_config(), run, {"eval.pgd.steps": 3, "eval.max_examples": 5}
    )
    assert config.eval.ood_sets == ("digits",)
    assert config.backbone.name == "small_cnn"
    assert config.eval.pgd.steps == 3 and config.eval.max_examples == 5
    assert config.eval.pgd.epsilons.l2 == base.get_config().eval.pgd.epsilons.l2
    assert "depth" not in config.backbone  # the run's section, not a merge
