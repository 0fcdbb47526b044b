"""Every experiment config loads and its loss section builds the model."""

import importlib
import re
from pathlib import Path

import pytest
from conftest import tiny_backbone

from hdge_tf.config_checks import check_config
from hdge_tf.model import HDGEClassifier
from hdge_tf.sgld_settings import split_flat

CONFIGS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py")
    # reproduce_* configs list runs of the experiment configs (tested below).
    if p.stem not in ("__init__", "base") and not p.stem.startswith("reproduce_")
)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_the_model_it_describes(name):
    config = importlib.import_module(f"hdge_tf.configs.{name}").get_config()
    loss, sgld = split_flat(config.loss)
    model = HDGEClassifier(tiny_backbone(), sgld=sgld, **loss)
    assert model.sgld.steps == config.loss.sgld_steps
    sgld = config.loss.px_sgld_weight > 0 or config.loss.pxy_sgld_weight > 0
    assert (model.replay_buffer is not None) == sgld
    assert model.queue.size == config.loss.queue_size
    assert config.train.batch_size <= config.loss.queue_size
    check_config(config)  # every value the trainer checks before a run


def test_the_jem_configs_use_the_sgld_term():
    from hdge_tf.configs import cifar10_hdge_jem, mnist5k_hdge_jem

    paper = cifar10_hdge_jem.get_config().loss
    assert (paper.px_sgld_weight, paper.sgld_steps, paper.sgld_step_size) == (1, 20, 1)
    assert (paper.sgld_noise_std, paper.replay_buffer_size) == (0.01, 10_000)
    demo = mnist5k_hdge_jem.get_config().loss
    assert demo.px_sgld_weight > 0 or demo.pxy_sgld_weight > 0


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_reproduction_runs_existing_configs_with_existing_keys(size):
    """Every variant of hdge-reproduce names an experiment config, and every
    override sets a key that config has (a typo would fail only in the run)."""
    from hdge_tf import configs
    from hdge_tf.configs import reproduce_mnist5k
    from hdge_tf.reproduce import ExperimentConfigs, plan

    config = reproduce_mnist5k.get_config(size)
    specs = [*config.variants.values(), config.judge]
    for spec in specs:
        experiment = importlib.import_module(f"hdge_tf.configs.{spec.config}")
        flat = experiment.get_config()
        for override in (*config.overrides, *spec.overrides, "loss.queue_size=1"):
            node = flat
            *parents, leaf = override.split("=", 1)[0].split(".")
            for key in parents:
                node = node[key]
            assert leaf in node, (spec.config, override)
    experiments = ExperimentConfigs(Path(configs.__file__).parent)
    assert plan.base_queue_size(config, experiments) in [
        int(k) for k in config.queue_sizes
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("eval.pgd.steps", -1, "eval.pgd.steps=-1: expected an integer >= 0."),
        ("precision", "float8", "precision='float8': expected one of ('float32', "),
        ("eval.pgd.norms", ("linf", "l3"), "eval.pgd.norms=('linf', 'l3'): expected"),
        ("eval.pgd.epsilons.l2", (0.5, -1.0), "eval.pgd.epsilons.l2=(0.5, -1.0): "),
        ("eval.pgd.gradient", "exact", "eval.pgd.gradient='exact': expected one of"),
        ("data.augment", "flip", "data.augment='flip': expected one of"),
        ("data.data_dir", " ", "data.data_dir=' ': expected a path (not empty or"),
        ("train.jit_compile", "maybe", "train.jit_compile='maybe': expected one of"),
    ],
)
def test_every_value_a_program_reads_is_checked(key, value, message):
    """The rules hdge-eval and hdge-export apply to the sections they read are
    hdge-train's, with the same messages."""
    config = importlib.import_module("hdge_tf.configs.base").get_config()
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    section = key.split(".")[0]
    for sections in (None, (section,)):
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            check_config(config, sections)


def test_a_program_checks_only_the_sections_it_reads():
    """A run's config.json may predate keys or hold another section's oddities;
    hdge-eval reads data and eval only."""
    config = importlib.import_module("hdge_tf.configs.base").get_config()
    config.train.batch_size = 0
    del config["loss"]
    check_config(config, ("data", "eval"))
    with pytest.raises(ValueError, match=r"^The config has no loss.queue_size, "):
        check_config(config)


def test_a_config_that_is_not_a_training_config_is_named():
    from hdge_tf.configs import reproduce_mnist5k

    with pytest.raises(
        ValueError, match=r"^The config has no seed, deterministic, train.epochs, "
    ):
        check_config(reproduce_mnist5k.get_config("tiny"))


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_every_reproduction_variant_builds_its_model(size):
    """A variant's overrides must make a model the trainer can build (the
    log p(x|y) variant's class-split buffer once got a size of the log p(x)
    recipe's that 10 classes do not divide, and failed only in the run)."""
    import ast

    from hdge_tf.configs import reproduce_mnist5k

    config = reproduce_mnist5k.get_config(size)
    for name, spec in config.variants.items():
        experiment = importlib.import_module(f"hdge_tf.configs.{spec.config}")
        loss = experiment.get_config().loss
        for override in (*config.overrides, *spec.overrides):
            key, value = override.split("=", 1)
            section, _, leaf = key.partition(".")
            if section == "loss":
                try:
                    loss[leaf] = ast.literal_eval(value)
                except ValueError:  # a bare string, as the flag parser takes it
                    loss[leaf] = value
        flat, sgld = split_flat(loss)
        model = HDGEClassifier(tiny_backbone(num_classes=10), sgld=sgld, **flat)
        if model.replay_buffer is not None:
            assert model.replay_buffer.size == loss.replay_buffer_size, name
