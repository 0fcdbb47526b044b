"""HDGEClassifier in the ways a Keras user reaches for: a subclassed backbone,
labels as a column, `Model.export`, `class_weight`, loading a saved model."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone

from hdge_tf import input_checks
from hdge_tf.export import export_saved_model
from hdge_tf.model import HDGEClassifier

REPO = Path(__file__).resolve().parents[1]


@keras.saving.register_keras_serializable(package="hdge_tf_tests")
class SubclassedNet(keras.Model):
    """A backbone written as a subclass: it has no input_shape until called."""

    def __init__(self, num_classes: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(num_classes)

    def call(self, images):
        return self.head(self.flatten(self.conv(images)))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def _called(images):
    net = SubclassedNet()
    net(images[:2])
    return net, {}


def _built(images):
    net = SubclassedNet()
    net.build((None, 8, 8, 1))
    return net, {}


def _unbuilt(images):
    return SubclassedNet(), {"image_shape": (8, 8, 1)}


@pytest.mark.parametrize("make", [_called, _built, _unbuilt])
def test_a_subclassed_backbone_trains_and_saves(separable_data, tmp_path, make):
    images, labels = separable_data
    backbone, kwargs = make(images)
    model = HDGEClassifier(backbone, queue_size=40, **kwargs)
    assert (model.image_shape, model.num_classes) == ((8, 8, 1), 4)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    served = tf.saved_model.load(export_saved_model(model, tmp_path / "sm"))
    logits = served.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(logits["logits"].numpy(), expected, atol=1e-5)


def test_an_unknowable_image_shape_says_what_to_pass():
    with pytest.raises(
        ValueError,
        match=r"cannot tell which images the backbone 'subclassed_net.*' takes .* "
        r"pass image_shape=\(height, width, channels\)",
    ):
        HDGEClassifier(SubclassedNet(), queue_size=40)


def _model():
    model = HDGEClassifier(tiny_backbone(), queue_size=40)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    return model


def test_labels_as_a_column_after_a_vector(separable_data):
    """Keras retraces the step for the new label shape with relaxed (unknown)
    shapes; both are one label per image."""
    images, labels = separable_data
    model = _model()
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    history = model.fit(images, labels[:, None], batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    column = model.evaluate(images, labels[:, None], verbose=0, return_dict=True)
    vector = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert column["accuracy"] == pytest.approx(vector["accuracy"])
    # More than one label per image is still refused.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="shape"):
        model.fit(images, np.stack([labels, labels], -1), epochs=1, verbose=0)


def test_model_export_after_fit_and_predict(separable_data, tmp_path):
    images, labels = separable_data
    model = _model()
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    expected = model.predict(images, verbose=0)
    model.export(tmp_path / "exported")
    loaded = tf.saved_model.load(str(tmp_path / "exported"))  # kept: owns weights
    np.testing.assert_allclose(loaded.serve(images).numpy(), expected, atol=1e-5)


def test_class_weight_is_named_in_the_error(separable_data):
    images, labels = separable_data
    with pytest.raises(ValueError, match=r"fit's class_weight= and sample_weight="):
        _model().fit(images, labels, class_weight={0: 2.0, 1: 1, 2: 1, 3: 1})


@pytest.mark.parametrize(
    "make",
    [lambda: tiny_backbone(num_classes=1), lambda: SubclassedNet(num_classes=1)],
    ids=["functional", "subclassed"],
)
def test_one_logit_is_refused_with_the_count(make):
    """softmax of one logit is 1 whatever the input: nothing would be learned."""
    with pytest.raises(ValueError, match=r"has 1 logit\(s\); HDGEClassifier needs"):
        HDGEClassifier(make(), queue_size=40, image_shape=(8, 8, 1))


def _range_warnings(caplog) -> int:
    return caplog.text.count("HDGEClassifier expects images in [-1, 1]")


@pytest.mark.parametrize("as_dataset", [False, True], ids=["arrays", "dataset"])
def test_images_in_0_255_give_one_warning(separable_data, caplog, as_dataset):
    """Pixels 0..255 as floats: the first fit / evaluate says so once, naming
    the range; later calls and later epochs do not look again."""
    images, labels = separable_data
    pixels = (images + 1) * 127.5
    data = {"x": pixels, "y": labels}
    if as_dataset:
        dataset = tf.data.Dataset.from_tensor_slices((pixels, labels))
        data = {"x": dataset.batch(16)}
    model = _model()
    model.fit(**data, batch_size=None if as_dataset else 16, epochs=2, verbose=0)
    model.evaluate(**data, verbose=0)
    assert _range_warnings(caplog) == 1
    first = pixels[:16]
    assert f"images range over [{first.min():g}, {first.max():g}]" in caplog.text
    assert "x / 127.5 - 1" in caplog.text
    # A new model is checked again, on evaluate as well as on fit.
    _model().evaluate(**data, verbose=0)
    assert _range_warnings(caplog) == 2


def test_images_in_range_give_no_warning(separable_data, caplog, monkeypatch):
    images, labels = separable_data
    looks = []
    original = input_checks.warn_if_outside_range
    monkeypatch.setattr(
        input_checks,
        "warn_if_outside_range",
        lambda *args: looks.append(1) or original(*args),
    )
    model = _model()
    model.fit(images, labels, batch_size=16, epochs=3, validation_split=0.25, verbose=0)
    model.evaluate(images, labels, verbose=0)
    assert _range_warnings(caplog) == 0
    assert looks == [1]  # one look at one batch, not one per step or epoch


def _save_model(tmp: Path) -> None:
    _model().save(tmp / "m.keras")


# In one fresh Python: loading before `import hdge_tf` fails, after it works.
_FRESH_LOADS = """
import json, sys
import keras
try:
    keras.saving.load_model(sys.argv[1])
    without = None
except Exception as error:
    without = str(error)
import hdge_tf
loaded = keras.saving.load_model(sys.argv[1])
print(json.dumps({"without": without, "with": type(loaded).__name__}))
"""


@pytest.mark.slow
def test_loading_a_saved_model_needs_import_hdge_tf(tmp_path):
    """Loading the model in a fresh Python, without and then with `import hdge_tf`."""
    _save_model(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_LOADS, str(tmp_path / "m.keras")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loads = json.loads(done.stdout.splitlines()[-1])
    assert "Could not locate class 'HDGEClassifier'" in loads["without"]
    assert loads["with"] == "HDGEClassifier"
    # What the user reads: the class's docstring and the README say so.
    assert "`import hdge_tf`" in HDGEClassifier.__doc__
    assert (
        "`import hdge_tf` before `keras.saving.load_model"
        in (REPO / "README.md").read_text()
    )
