"""Every experiment config loads and its loss section builds the model."""

import importlib
from pathlib import Path

import pytest
from conftest import tiny_backbone

from hdge_tf.model import HDGEClassifier

CONFIGS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
    if p.stem not in ("__init__", "base")
)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_the_model_it_describes(name):
    config = importlib.import_module(f"hdge_tf.configs.{name}").get_config()
    model = HDGEClassifier(tiny_backbone(), **config.loss)
    sgld = config.loss.px_sgld_weight > 0 or config.loss.pxy_sgld_weight > 0
    assert (model.replay_buffer is not None) == sgld
    assert model.queue.size == config.loss.queue_size
    assert config.train.batch_size <= config.loss.queue_size


def test_the_jem_configs_use_the_sgld_term():
    from hdge_tf.configs import cifar10_hdge_jem, mnist5k_hdge_jem

    paper = cifar10_hdge_jem.get_config().loss
    assert (paper.px_sgld_weight, paper.sgld_steps, paper.sgld_step_size) == (1, 20, 1)
    assert (paper.sgld_noise_std, paper.replay_buffer_size) == (0.01, 10_000)
    assert mnist5k_hdge_jem.get_config().loss.px_sgld_weight > 0
