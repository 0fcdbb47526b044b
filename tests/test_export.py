"""SavedModel export: signatures reproduce the in-memory model, no training state."""

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone
from scipy.special import logsumexp, softmax

from hdge_tf import HDGEClassifier, SmallCNN, evaluation, export
from hdge_tf import data as data_lib
from hdge_tf.bin import cli, hdge_export
from hdge_tf.export import SIGNATURES, export_saved_model

REPO = Path(__file__).resolve().parents[1]
QUEUE_SIZE = 24  # a [4, 24] queue shape no backbone variable has


def _images(batch_size: int, seed: int, image_shape=(8, 8, 1)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch_size, *image_shape)).astype(np.float32)


def _trained_classifier() -> HDGEClassifier:
    # Batch norm and dropout make a training-mode forward pass visible.
    keras.utils.set_random_seed(0)
    backbone = SmallCNN(
        4, filters=(4,), dense_units=8, norm="batch", dropout=0.5, image_shape=(8, 8, 1)
    )
    model = HDGEClassifier(backbone, queue_size=QUEUE_SIZE)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    labels = np.arange(32, dtype=np.int32) % 4
    model.fit(_images(32, seed=1), labels, batch_size=16, epochs=1, verbose=0)
    return model


def _reference_outputs(logits: np.ndarray) -> dict[str, np.ndarray]:
    """numpy/scipy re-computation of every exported output from the logits."""
    return {
        "logits": logits,
        "probabilities": softmax(logits, axis=-1),
        "log_px": logsumexp(logits, axis=-1),
        "max_softmax": softmax(logits, axis=-1).max(axis=-1),
    }


def _assert_matches(loaded, model, images, atol=1e-5):
    expected = _reference_outputs(model.predict(images, verbose=0).astype(np.float64))
    for signature, names in SIGNATURES.items():
        outputs = loaded.signatures[signature](images=tf.constant(images))
        assert sorted(outputs) == sorted(names), signature
        for name in names:
            assert outputs[name].dtype == tf.float32, (signature, name)
            np.testing.assert_allclose(
                outputs[name].numpy(), expected[name], atol=atol, err_msg=name
            )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _trained_classifier()
    export_dir = tmp_path_factory.mktemp("export") / "saved_model"
    assert export_saved_model(model, export_dir) == str(export_dir)
    return model, export_dir, tf.saved_model.load(str(export_dir))


@pytest.mark.parametrize("batch_size", [1, 7])
def test_signatures_reproduce_the_in_memory_model(exported, batch_size):
    model, _, loaded = exported
    images = _images(batch_size, seed=batch_size)
    _assert_matches(loaded, model, images)

    # The scores agree with the ones evaluation reports, and are not degenerate.
    energy = loaded.signatures["energy"](images=tf.constant(images))
    logits = model.predict(images, verbose=0)
    np.testing.assert_allclose(
        energy["log_px"].numpy(), evaluation.log_px(logits), atol=1e-5
    )
    np.testing.assert_allclose(
        energy["max_softmax"].numpy(), evaluation.max_softmax(logits), atol=1e-6
    )
    assert np.ptp(logits) > 0.1


def test_export_holds_the_backbone_weights_only(exported):
    model, export_dir, loaded = exported
    backbone_vars = {f"{v.path}:0": tuple(v.shape) for v in model.backbone.variables}
    assert {v.name: tuple(v.shape) for v in loaded.variables} == backbone_vars
    # The variables file as well: no queue ([classes, K] logits, scalar pointer and
    # counter) and no optimizer state (scalar iterations; moments are not
    # referenced by anything exported).
    saved = [
        (key, tuple(shape))
        for key, shape in tf.train.list_variables(
            str(export_dir / "variables" / "variables")
        )
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH"
    ]
    assert saved and all(shape in backbone_vars.values() for _, shape in saved)
    assert not [key for key, _ in saved if re.search("queue|optimizer|adam", key)]
    assert len({key.split("/")[1] for key, _ in saved}) == len(backbone_vars)
    assert (4, QUEUE_SIZE) == tuple(model.queue.logits.shape)


# The run directories hdge-export reads, by name.
CLI_RUNS = ("run", "empty", "gate", "no_validation")


def _gate_inputs(model, gate) -> dict[str, np.ndarray]:
    """An accepted image, one scored above and one below the validation range,
    and broken ones; and an image slightly outside [-1, 1], within tolerance."""
    candidates = _images(2000, seed=12)
    log_px = logsumexp(model.predict(candidates, verbose=0).astype(np.float64), -1)
    accepted = candidates[
        np.argmin(np.abs(log_px - (gate.threshold + gate.upper_threshold) / 2))
    ]
    one_nan = accepted.copy()
    one_nan[3, 4, 0] = np.nan
    uint8_scale = (accepted + 1) * 127.5  # pixels 0..255, not [-1, 1]
    above, below = candidates[np.argmax(log_px)], candidates[np.argmin(log_px)]
    blank = np.full_like(accepted, -1.0)
    images = [accepted, one_nan, uint8_scale, np.full_like(accepted, 1e6), blank, above]
    return {
        "gate": np.stack([*images, below]),
        # One pixel past the range, within the tolerance.
        "gate:nudged": np.where(accepted == accepted.max(), 1.04, accepted)[None],
    }


def _shape_cases() -> dict[str, np.ndarray]:
    cases = {}
    for signature in (*SIGNATURES, "gate"):
        cases[f"{signature}:size"] = _images(2, seed=1, image_shape=(6, 6, 1))
        cases[f"{signature}:channels"] = _images(2, seed=1, image_shape=(8, 8, 3))
        # A batch without the channel axis, and one with an axis too many.
        cases[f"{signature}:no_channel_axis"] = _images(2, seed=1)[..., 0]
        cases[f"{signature}:rank_5"] = _images(2, seed=1)[..., None]
        cases[f"{signature}:right"] = _images(2, seed=1)
    return cases


# The classifier both fixtures save and export (neither changes it).
_prepared_classifier = functools.cache(_trained_classifier)


def _prepare_runs(tmp: Path) -> None:
    """The trained classifier's run directories, for hdge-export."""
    model = _prepared_classifier()
    for name in CLI_RUNS:
        (tmp / name).mkdir()
    model.save(tmp / "run" / "model.keras")
    # A run trained without a validation split.
    model.save(tmp / "no_validation" / "model.keras")
    (tmp / "no_validation" / "config.json").write_text(
        json.dumps({"data": {"validation_size": 0}})
    )
    # An mnist5k run: the CLI takes its validation split for the gate.
    keras.utils.set_random_seed(0)
    backbone = SmallCNN(10, filters=(4,), dense_units=8, image_shape=(32, 32, 1))
    HDGEClassifier(backbone, queue_size=QUEUE_SIZE).save(tmp / "gate" / "model.keras")
    run_config = {"data": {"name": "mnist5k", "validation_size": 200}}
    (tmp / "gate" / "config.json").write_text(json.dumps(run_config))
    # The same model's file alone, without a run's config.json.
    (tmp / "bare").mkdir()
    shutil.copy(tmp / "gate" / "model.keras", tmp / "bare" / "model.keras")


# README: hdge-export reads a --model=FILE.keras alone, its gate set on the
# validation split of the config --config names (none without one).
MODEL_ONLY_RUNS = {
    "model_and_config": [
        "--model={tmp}/bare/model.keras",
        "--config=configs/mnist5k_hdge.py",
        "--config.data.validation_size=200",
    ],
    "model_alone": ["--model={tmp}/bare/model.keras", "--output={tmp}/bare_no_gate"],
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """{run: (hdge-export's exit status, its stderr, the run directory)}, each
    run exported in process (`cli.call`)."""
    tmp = tmp_path_factory.mktemp("export_cli")
    _prepare_runs(tmp)
    runs = {name: [f"--workdir={tmp}/{name}"] for name in CLI_RUNS}
    runs.update(
        {
            name: [a.format(tmp=tmp) for a in args]
            for name, args in MODEL_ONLY_RUNS.items()
        }
    )
    outcomes = {name: cli.call(hdge_export, args) for name, args in runs.items()}
    return {
        name: (outcome.status, outcome.stderr, tmp / name)
        for name, outcome in outcomes.items()
    }


def _prepare_exports(tmp: Path) -> None:
    """SavedModels of the trained classifier, with the inputs to serve them."""
    model = _prepared_classifier()
    model.save(tmp / "model.keras")
    export_saved_model(model, tmp / "saved_model")
    gate = export.fit_gate(model, _images(400, seed=11), tpr=0.9)
    export_saved_model(model, tmp / "gate_sm", gate)
    np.savez(tmp / "gate_cases.npz", **_gate_inputs(model, gate))
    export_saved_model(model, tmp / "shape_sm", export.fit_gate(model, _images(50, 13)))
    np.savez(tmp / "shape_cases.npz", **_shape_cases())


# A fresh process without hdge_tf, as a server: loads each SavedModel and runs
# each named signature on each input of its .npz file, writing
# [{case: {output: list} or {"error": message}}] to argv[1]; then TensorFlow's
# saved_model_cli on argv[2], as its console script runs it (its output is the
# process's).
_SERVE_AND_SHOW = """
import json, sys
import numpy as np, tensorflow as tf
from tensorflow.python.tools import saved_model_cli
served = []
for export_dir, cases in zip(sys.argv[3::2], sys.argv[4::2]):
    loaded = tf.saved_model.load(export_dir)
    results = {}
    for case, images in np.load(cases).items():
        signature = case.split(":")[0]
        try:
            out = loaded.signatures[signature](images=tf.constant(images))
            results[case] = {
                k: v.numpy().astype(str if v.dtype == tf.string else float).tolist()
                for k, v in out.items()
            }
        except tf.errors.InvalidArgumentError as err:
            results[case] = {"error": err.message}
    served.append(results)
with open(sys.argv[1], "w") as f:
    json.dump(served, f)
sys.argv = ["saved_model_cli", "show", "--all", "--dir", sys.argv[2]]
saved_model_cli.main()
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """One serving process for both SavedModels that then runs saved_model_cli."""
    tmp = tmp_path_factory.mktemp("served")
    _prepare_exports(tmp)
    served = tmp / "served.json"
    shown = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_SHOW, str(served), str(tmp / "saved_model")]
        + [str(tmp / n) for n in ("gate_sm", "gate_cases.npz")]
        + [str(tmp / n) for n in ("shape_sm", "shape_cases.npz")],
        capture_output=True,
        text=True,
    )
    assert served.exists(), shown.stderr[-3000:]
    gate, shape = json.loads(served.read_text())
    return {
        "dir": tmp,
        "saved_model_cli": shown,
        "served_gate": gate,
        "served_shape": shape,
    }


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(served):
    result = served["saved_model_cli"]
    assert result.returncode == 0, result.stderr
    blocks = dict(
        re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name", result.stdout, re.S)
    )
    assert set(SIGNATURES) <= set(blocks)
    expected_shapes = {
        "logits": "(-1, 4)",
        "probabilities": "(-1, 4)",
        "log_px": "(-1)",
        "max_softmax": "(-1)",
    }
    for signature, names in SIGNATURES.items():
        block = blocks[signature]
        assert re.findall(r"inputs\['(\w+)'\]", block) == ["images"]
        assert "shape: (-1, 8, 8, 1)" in block
        assert sorted(re.findall(r"outputs\['(\w+)'\]", block)) == sorted(names)
        for name in names:
            output = block.split(f"outputs['{name}']")[1]
            assert re.match(
                rf" tensor_info:\n\s+dtype: DT_FLOAT\n\s+shape: "
                rf"{re.escape(expected_shapes[name])}\n",
                output,
            ), (signature, name, output[:200])
        assert block.count("DT_FLOAT") == 3


@pytest.mark.parametrize(
    "make_backbone",
    [
        # Our backbones keep the final Dense in float32.
        lambda: SmallCNN(4, filters=(4,), dense_units=8, image_shape=(8, 8, 1)),
        # A bfloat16 head: the export casts the logits.
        tiny_backbone,
    ],
    ids=["float32_head", "bfloat16_head"],
)
def test_mixed_bfloat16_backbone_exports_float32(make_backbone, tmp_path):
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = make_backbone()
        assert backbone.layers[1].compute_dtype == "bfloat16"
        images = _images(5, seed=3)
        loaded = tf.saved_model.load(export_saved_model(backbone, tmp_path / "sm"))
        # predict of a bare backbone returns its head's dtype; compare in float32.
        model = HDGEClassifier(backbone, queue_size=8)
        _assert_matches(loaded, model, images)
    finally:
        keras.mixed_precision.set_global_policy(policy)


@pytest.mark.slow
def test_cli_exports_a_workdir(exports):
    status, stderr, workdir = exports["run"]
    empty_status, empty_stderr, empty = exports["empty"]
    model = keras.saving.load_model(workdir / "model.keras")

    assert status == 0, stderr[-3000:]
    export_dir = workdir / "export" / "saved_model"
    assert (export_dir / "saved_model.pb").is_file()
    assert "energy: images float32[None, 8, 8, 1] -> log_px float32[None]" in stderr
    _assert_matches(tf.saved_model.load(str(export_dir)), model, _images(3, seed=5))

    assert empty_status == 1 and "Traceback" not in empty_stderr
    assert empty_stderr.splitlines()[-1].startswith(
        f"hdge-export: error: No model file {empty / 'model.keras'}"
    )
    assert not (empty / "export").exists()


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4)

    def call(self, images):
        return self.dense(keras.ops.reshape(images, (-1, 64)))


@pytest.mark.parametrize(
    ("make_model", "error", "match"),
    [
        (lambda: tiny_backbone().get_weights(), TypeError, "got list"),
        (
            lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)]),
            ValueError,
            r"has inputs \[\(None, 3\)\]",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3)]
            ),
            ValueError,
            r"has outputs \[\(None, 6, 6, 4\)\]",
        ),
        (_Subclassed, ValueError, "has no defined inputs"),
    ],
    ids=["not_a_model", "2d_input", "4d_output", "subclassed"],
)
def test_bad_models_name_the_problem(make_model, error, match, tmp_path):
    with pytest.raises(error, match=r"\[N, H, W, C\] image input") as info:
        export_saved_model(make_model(), tmp_path / "sm")
    assert re.search(match, str(info.value)), str(info.value)
    assert not (tmp_path / "sm").exists()


def test_gate_threshold_is_the_validation_quantile(exported):
    model = exported[0]
    validation = _images(50, seed=7)
    gate = export.fit_gate(model, validation, tpr=0.9)
    scores = logsumexp(model.predict(validation, verbose=0).astype(np.float64), -1)
    assert gate.threshold == pytest.approx(np.quantile(scores, 0.1), abs=1e-5)
    assert (gate.tpr, gate.num_validation) == (0.9, 50)
    assert np.mean(scores >= gate.threshold) == pytest.approx(0.9, abs=0.02)
    with pytest.raises(ValueError, match="true-positive rate must be in"):
        export.fit_gate(model, validation, tpr=1.5)


def test_a_gate_fitted_on_images_of_another_shape_names_both(exported):
    with pytest.raises(ValueError) as error:
        export.fit_gate(exported[0], _images(5, seed=7, image_shape=(9, 8, 1)))
    assert str(error.value) == (
        "The validation images have shape (5, 9, 8, 1), but the model takes images "
        "of shape (batch, 8, 8, 1) [batch, height, width, channels]."
    )


@pytest.mark.slow
def test_cli_exports_a_gate_set_on_the_validation_split(exports):
    """The CLI takes the run's validation split; the SavedModel, loaded back,
    flags inputs as the in-memory model does (served by another process:
    test_the_gate_rejects_inputs_no_data_image_looks_like)."""
    status, stderr, workdir = exports["gate"]
    assert status == 0, stderr[-3000:]
    model = keras.saving.load_model(workdir / "model.keras")

    validation, _ = data_lib.load_arrays("mnist5k", "validation", validation_size=200)
    scores = logsumexp(model.predict(validation, verbose=0).astype(np.float64), -1)
    export_dir = workdir / "export" / "saved_model"
    gate = export.read_gate(export_dir)
    assert gate.threshold == pytest.approx(np.quantile(scores, 0.05), abs=1e-5)
    assert (gate.tpr, gate.num_validation) == (0.95, 200)

    loaded = tf.saved_model.load(str(export_dir))
    test, _ = data_lib.load_arrays("mnist5k", "test", limit=64)
    noise = np.random.default_rng(0).uniform(-1, 1, (64, 32, 32, 1))
    images = np.concatenate([test, noise.astype(np.float32)])
    outputs = loaded.signatures["gate"](images=tf.constant(images))
    assert sorted(outputs) == sorted(export.GATE_SIGNATURE[1])
    in_memory = logsumexp(model.predict(images, verbose=0).astype(np.float64), -1)
    np.testing.assert_allclose(outputs["log_px"].numpy(), in_memory, atol=1e-5)
    flags = outputs["in_distribution"].numpy()
    assert flags.dtype == bool
    # Float rounding at either edge.
    near = (np.abs(in_memory - gate.threshold) < 1e-4) | (
        np.abs(in_memory - gate.upper_threshold) < 1e-4
    )
    expected = (in_memory >= gate.threshold) & (in_memory <= gate.upper_threshold)
    np.testing.assert_array_equal(flags[~near], expected[~near])
    np.testing.assert_allclose(outputs["threshold"].numpy(), gate.threshold)
    np.testing.assert_allclose(outputs["upper_threshold"].numpy(), gate.upper_threshold)


@pytest.mark.slow
def test_cli_exports_a_model_file_alone(exports):
    """With --config, the gate is set on that config's validation split, as for
    the run the model came from; without, the export has no gate and says why."""
    status, stderr, tmp = exports["model_and_config"]
    assert status == 0, stderr[-3000:]
    with_config = tmp.parent / "bare" / "export" / "saved_model"
    gate = export.read_gate(with_config)
    expected = export.read_gate(tmp.parent / "gate" / "export" / "saved_model")
    assert (gate.num_validation, gate.threshold) == (200, expected.threshold)
    assert "gate" in tf.saved_model.load(str(with_config)).signatures

    status, stderr, tmp = exports["model_alone"]
    assert status == 0, stderr[-3000:]
    assert "no --config: exporting without an OOD gate; pass --config=FILE" in stderr
    assert export.read_gate(tmp.parent / "bare_no_gate") is None


@pytest.mark.slow
def test_no_validation_split_exports_no_gate(exports):
    status, stderr, workdir = exports["no_validation"]
    assert status == 0, stderr[-3000:]
    assert "without an OOD gate" in stderr
    export_dir = workdir / "export" / "saved_model"
    assert export.read_gate(export_dir) is None
    assert "gate" not in tf.saved_model.load(str(export_dir)).signatures


@pytest.mark.slow
def test_the_gate_rejects_inputs_no_data_image_looks_like(served):
    tmp = served["dir"]
    model = keras.saving.load_model(tmp / "model.keras")
    scores = logsumexp(
        model.predict(_images(400, seed=11), verbose=0).astype(np.float64), -1
    )
    gate = export.read_gate(tmp / "gate_sm")
    assert gate.threshold == pytest.approx(np.quantile(scores, 0.1), abs=1e-5)
    # The upper bound is near the validation maximum and costs <= 0.5 point of TPR.
    assert gate.upper_threshold == pytest.approx(np.quantile(scores, 0.995), abs=1e-5)
    assert gate.threshold < gate.upper_threshold <= scores.max() + 1e-5
    assert np.mean(scores > gate.upper_threshold + 1e-5) <= 0.005
    # The inputs above and below the validation range are clearly so.
    inputs = np.load(tmp / "gate_cases.npz")
    log_px = logsumexp(model.predict(inputs["gate"], verbose=0).astype(np.float64), -1)
    assert log_px[5] > gate.upper_threshold + 1e-3
    assert log_px[6] < gate.threshold - 1e-3

    outputs = served["served_gate"]["gate"]
    assert outputs["reason"] == [
        "in_distribution",
        "non_finite_input",
        "outside_data_range",
        "outside_data_range",
        "flat_input",
        "log_px_above_validation_range",
        "log_px_below_threshold",
    ]
    assert outputs["in_distribution"] == [True] + [False] * 6
    assert gate.flat_tolerance == export.FLAT_TOLERANCE
    # Slightly outside [-1, 1], within the stated tolerance: judged on log p(x).
    assert gate.range_tolerance == 0.1 and gate.input_range == (-1.0, 1.0)
    assert np.abs(inputs["gate:nudged"]).max() > 1.0
    assert served["served_gate"]["gate:nudged"]["reason"] != ["outside_data_range"]


@pytest.mark.slow
def test_every_signature_names_the_image_shape_it_expects(served):
    results = served["served_shape"]
    assert sorted(results) == sorted(_shape_cases())
    for case, result in results.items():
        if case.endswith(":right"):
            assert "error" not in result, case
            continue
        error = result.get("error", "")
        assert "images must have shape [batch, 8, 8, 1] (height, width, " in (error), (
            case,
            result,
        )
        received = " ".join(str(d) for d in _shape_cases()[case].shape)
        assert f"received shape] [{received}]" in error, (case, error)
