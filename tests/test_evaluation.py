"""The evaluation suite: metrics against hand computations, scores, OOD sets, PGD,
the report and the CLI."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import quadrant_data, tiny_backbone
from scipy.special import logsumexp, softmax
from sklearn.metrics import average_precision_score

from hdge_tf import HDGEClassifier
from hdge_tf.bin import cli, hdge_eval
from hdge_tf.configs import mnist5k_hdge
from hdge_tf.data import ood as ood_data
from hdge_tf.evaluation import calibration, ood, protocol, report, robustness, stages

REPO = Path(__file__).resolve().parents[1]

# Calibration ----------------------------------------------------------------------

# Two classes, class 0 predicted with these confidences; `CORRECT` says whether
# the label is 0. By hand with 4 bins [0, .25) [.25, .5) [.5, .75) [.75, 1]:
#   bin 3: confidences .55 .65 .65, accuracy 2/3, mean confidence .61667, gap .05
#   bin 4: confidences .85 .95 .95 .95 .95, accuracy 4/5, mean .93, gap .13
#   ECE = 3/8 * .05 + 5/8 * .13 = 0.1
# With one bin: |accuracy 6/8 - mean confidence 6.5/8| = 0.0625.
CONFIDENCES = np.array([0.55, 0.65, 0.65, 0.85, 0.95, 0.95, 0.95, 0.95])
CORRECT = np.array([1, 0, 1, 1, 1, 1, 1, 0], bool)


def _binary_logits(confidences):
    return np.log(np.stack([confidences, 1 - confidences], -1)).astype(np.float32)


def test_ece_matches_a_hand_computation():
    logits, labels = _binary_logits(CONFIDENCES), np.where(CORRECT, 0, 1)
    assert calibration.expected_calibration_error(logits, labels, 4) == (
        pytest.approx(0.1, abs=1e-5)
    )
    assert calibration.expected_calibration_error(logits, labels, 1) == (
        pytest.approx(0.0625, abs=1e-5)
    )
    bins = calibration.reliability_bins(logits, labels, 4)
    np.testing.assert_array_equal(bins["count"], [0, 0, 3, 5])
    np.testing.assert_allclose(bins["accuracy"][2:], [2 / 3, 0.8], rtol=1e-6)
    np.testing.assert_allclose(bins["confidence"][2:], [1.85 / 3, 0.93], rtol=1e-5)
    assert np.isnan(bins["accuracy"][0])
    np.testing.assert_allclose(bins["lower"], [0, 0.25, 0.5, 0.75])


def test_classification_metrics_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, 50)
    probs = softmax(logits.astype(np.float64), axis=-1)
    metrics = calibration.classification_metrics(logits, labels)
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == labels))
    nll = -np.log(probs[np.arange(50), labels]).mean()
    assert metrics["nll"] == pytest.approx(nll, rel=1e-5)
    brier = np.sum((probs - np.eye(5)[labels]) ** 2, axis=-1).mean()
    assert metrics["brier"] == pytest.approx(brier, rel=1e-5)


# OOD metrics ----------------------------------------------------------------------

IN_SCORES, OUT_SCORES = [0.9, 0.8, 0.4], [0.5, 0.3]


def test_auroc_counts_correctly_ordered_pairs():
    # 5 of the 6 (in, out) pairs have the in-distribution score higher.
    assert ood.auroc(IN_SCORES, OUT_SCORES) == pytest.approx(5 / 6)
    assert ood.auroc(OUT_SCORES, IN_SCORES) == pytest.approx(1 / 6)


def test_aupr_depends_on_which_class_is_positive():
    # In-distribution positive, ranked by score: 0.9+ 0.8+ 0.5- 0.4+ 0.3-:
    # AP = (1 + 1 + 3/4) / 3. OOD positive, ranked by -score: 0.3+ 0.4- 0.5+:
    # AP = (1 + 2/3) / 2.
    aupr_in = ood.aupr(IN_SCORES, OUT_SCORES, positive="in")
    aupr_out = ood.aupr(IN_SCORES, OUT_SCORES, positive="out")
    assert aupr_in == pytest.approx(11 / 12)
    assert aupr_out == pytest.approx(5 / 6)
    assert aupr_in != pytest.approx(aupr_out)
    # Taking the OOD set as positive without flipping the score is yet another
    # (wrong) number: the convention is not cosmetic.
    labels = np.array([0, 0, 0, 1, 1])
    wrong = average_precision_score(labels, IN_SCORES + OUT_SCORES)
    assert wrong != pytest.approx(aupr_in) and wrong != pytest.approx(aupr_out)
    with pytest.raises(ValueError, match="positive"):
        ood.aupr(IN_SCORES, OUT_SCORES, positive="ood")


def test_fpr_at_95_tpr():
    # The threshold keeping 95 of 100 in-distribution scores is 6; 6..9 of the
    # OOD scores 0..9 pass it.
    in_scores, out_scores = np.arange(1, 101), np.arange(0, 10)
    assert ood.fpr_at_tpr(in_scores, out_scores, 0.95) == pytest.approx(0.4)
    assert ood.fpr_at_tpr(in_scores, out_scores + 200, 0.95) == 1.0
    assert ood.fpr_at_tpr(in_scores, out_scores - 10, 0.95) == 0.0
    metrics = ood.detection_metrics(in_scores, out_scores)
    assert set(metrics) == {"auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr"}
    assert metrics["fpr_at_95_tpr"] == pytest.approx(0.4)


# OOD scores -----------------------------------------------------------------------


def _smooth_model(seed=0):
    """tanh everywhere so finite differences see no kinks."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, activation="tanh")(inputs)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(4)(h))


def test_grad_norm_matches_finite_differences():
    model = _smooth_model()
    images = np.random.default_rng(0).uniform(-1, 1, (3, 6, 6, 1)).astype(np.float32)
    h = 1e-2
    eye = np.eye(36, dtype=np.float32).reshape(36, 6, 6, 1)
    for image, score in zip(images, ood.grad_norm(model, images), strict=True):
        batch = np.concatenate([image + h * eye, image - h * eye])
        lse = logsumexp(model.predict(batch, verbose=0).astype(np.float64), axis=-1)
        gradient = (lse[:36] - lse[36:]) / (2 * h)
        assert score == pytest.approx(-np.linalg.norm(gradient), rel=2e-3)


def _hdge_model(image_shape=(8, 8, 1), num_classes=4, formulation="paper"):
    backbone = tiny_backbone(num_classes, image_shape)
    return HDGEClassifier(backbone, queue_size=16, formulation=formulation)


@pytest.mark.parametrize("formulation", ["paper", "reference"])
def test_contrast_is_the_best_class_log_px_given_y(formulation):
    """Against the published code's form: a (1 + K)-way softmax per class."""
    model = _hdge_model(formulation=formulation)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (5, 8, 8, 1)).astype(np.float32)
    logits = model.predict(images, verbose=0).astype(np.float64)
    z = logits / np.linalg.norm(logits, axis=-1, keepdims=True)
    q = model.queue.logits.numpy().astype(np.float64)  # [C, K], normalized columns
    if formulation == "reference":  # log(exp(v) + C - 1)
        z, q = np.logaddexp(z, np.log(3)), np.logaddexp(q, np.log(3))
    expected = np.empty(z.shape)
    for c in range(4):
        scores = np.concatenate([z[:, c : c + 1], np.tile(q[c], (5, 1))], 1) / 0.1
        expected[:, c] = np.log(softmax(scores, axis=1)[:, 0])
    result = ood.compute_scores(model, images, ["contrast", "log_px", "max_softmax"])
    np.testing.assert_allclose(result["contrast"], expected.max(1), rtol=1e-4)
    np.testing.assert_allclose(result["log_px"], logsumexp(logits, -1), rtol=1e-5)
    # float32 logits from two call paths (predict, compute_scores) may differ in
    # the last bit under oneDNN.
    np.testing.assert_allclose(
        result["max_softmax"], softmax(logits, -1).max(-1), rtol=1e-6
    )


def test_score_errors_name_the_problem():
    images = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="needs a model with a logit queue"):
        ood.compute_scores(tiny_backbone(), images, ["contrast"])
    with pytest.raises(ValueError, match=r"Unknown OOD scores \['energy'\]"):
        ood.compute_scores(tiny_backbone(), images, ["energy"])


# OOD sets -------------------------------------------------------------------------


def test_synthetic_sets_are_built_from_the_test_images():
    rng = np.random.default_rng(0)
    test = rng.uniform(-1, 1, (20, 8, 8, 3)).astype(np.float32)
    interp = ood_data.load_ood_set("interp", test, seed=1)
    assert interp.shape == test.shape
    partners = 2 * interp - test  # each must be another test image
    distances = np.abs(partners[:, None] - test[None]).max(axis=(2, 3, 4))
    assert np.all(distances.min(1) < 1e-5)
    assert np.all(distances.argmin(1) != np.arange(20))

    noise = ood_data.load_ood_set("noise", test, seed=1)
    assert noise.shape == test.shape and -1 <= noise.min() < -0.9 < 0.9 < noise.max()
    constant = ood_data.load_ood_set("constant", test, seed=1)
    assert np.allclose(constant, constant[:, :1, :1, :])  # flat per image/channel
    assert constant[:, 0, 0].std(0).min() > 0.3  # colours differ between images
    again = ood_data.load_ood_set("constant", test, seed=1)
    np.testing.assert_array_equal(constant, again)


def test_photos_are_seeded_crops_of_natural_photographs_in_the_model_shape():
    test = np.zeros((12, 28, 28, 1), np.float32)
    photos = ood_data.load_ood_set("photos", test, seed=1)
    assert photos.shape == test.shape and photos.dtype == np.float32
    assert -1 <= photos.min() and photos.max() <= 1
    # Real pictures: no two crops alike, most with texture, not flat colours.
    flat = photos.reshape(12, -1)
    assert np.abs(flat[:, None] - flat[None]).max(-1)[np.triu_indices(12, 1)].min() > 0
    assert np.median(flat.std(-1)) > 0.05
    np.testing.assert_array_equal(photos, ood_data.load_ood_set("photos", test, seed=1))
    assert not np.array_equal(photos, ood_data.load_ood_set("photos", test, seed=2))
    rgb = ood_data.load_ood_set("photos", np.zeros((3, 8, 8, 3), np.float32))
    assert rgb.shape == (3, 8, 8, 3)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 0.01  # colour kept for RGB


def test_sets_of_another_size_are_resized_and_channel_adapted():
    test = np.zeros((4, 16, 16, 3), np.float32)
    digits = ood_data.load_ood_set("digits", test, limit=10)  # 32x32x1 -> 16x16x3
    assert digits.shape == (10, 16, 16, 3)
    assert -1 <= digits.min() and digits.max() <= 1 and digits.std() > 0.1
    np.testing.assert_array_equal(digits[..., 0], digits[..., 2])

    with tfds.testing.mock_data(num_examples=6):
        svhn = ood_data.load_ood_set("svhn_cropped", test, (8, 8, 1), limit=5)
        celeb_a = ood_data.load_ood_set("celeb_a", test, (32, 32, 3))  # no labels
    assert svhn.shape == (5, 8, 8, 1) and celeb_a.shape == (6, 32, 32, 3)
    for images in (svhn, celeb_a):
        assert images.dtype == np.float32 and np.abs(images).max() <= 1


def test_adapt_images_crops_to_the_aspect_ratio():
    # A 4x8 image whose left and right quarters are -1: the central 4x4 crop is 1s.
    image = -np.ones((1, 4, 8, 1), np.float32)
    image[:, :, 2:6] = 1
    np.testing.assert_allclose(ood_data.adapt_images(image, (2, 2, 3)), 1.0)
    rgb = np.stack([np.full((1, 2, 2), v) for v in (1.0, -1.0, 0.0)], -1)
    gray = ood_data.adapt_images(rgb, (2, 2, 1)).numpy()
    np.testing.assert_allclose(gray, 0.299 - 0.587, rtol=1e-6)


def test_unknown_set_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown OOD set 'svhn'.*interp.*digits"):
        ood_data.load_ood_set("svhn", np.zeros((2, 8, 8, 1), np.float32))


# Robustness -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model():
    """The tiny backbone trained on the separable quadrant data (about 100%)."""
    images, labels = quadrant_data(256)
    model = tiny_backbone(4, (8, 8, 1))
    model.compile(
        optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy"
    )
    model.fit(images, labels, epochs=30, batch_size=32, verbose=0)
    return model, images[:64], labels[:64]


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.3), ("l2", 1.5)])
def test_pgd_stays_in_the_ball_and_the_pixel_range(trained_model, norm, epsilon):
    model, images, labels = trained_model
    images = images.copy()
    images[:8] = np.sign(images[:8])  # pixels at the range's edges must stay inside
    adversarial = robustness.pgd_attack(
        model, images, labels, norm, epsilon, steps=5, step_size=epsilon
    ).numpy()
    delta = (adversarial - images).reshape(len(images), -1)
    if norm == "linf":
        assert np.abs(delta).max() <= epsilon + 1e-6
    else:
        assert np.linalg.norm(delta, axis=1).max() <= epsilon * (1 + 1e-5)
    if norm == "linf":
        assert np.abs(delta).max() > 0.5 * epsilon
    else:  # steps of epsilon reach the sphere unless the pixel range cuts them
        assert np.median(np.linalg.norm(delta, axis=1)) > 0.9 * epsilon
    assert adversarial.min() >= -1 and adversarial.max() <= 1


def test_pgd_lowers_accuracy_and_zero_epsilon_does_nothing(trained_model):
    model, images, labels = trained_model
    clean = np.mean(robustness.predict_labels(model, images) == labels)
    assert clean > 0.95
    unchanged = robustness.pgd_attack(model, images, labels, "linf", 0.0, steps=3)
    np.testing.assert_array_equal(unchanged, images)
    for norm, epsilons in [("linf", [0.0, 0.1, 0.4]), ("l2", [0.0, 1.0, 3.0])]:
        accuracy = robustness.robust_accuracy(
            model, images, labels, norm, epsilons, steps=10
        )
        assert accuracy[0] == pytest.approx(clean)
        assert accuracy[2] < clean - 0.5, (norm, accuracy)
        assert accuracy[2] <= accuracy[1] <= accuracy[0]


def _cross_entropy(labels, logits):
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def _input_gradient(images, labels, logits_fn):
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = _cross_entropy(labels, logits_fn(images))
    return tape.gradient(loss, images).numpy()


def test_bpda_gradient_is_the_plain_gradient_at_the_refined_point(trained_model):
    model, images, labels = trained_model
    images, labels = images[:16], labels[:16]
    refine = robustness.Refinement(steps=2, step_size=0.5, noise_std=0.01)
    seed = 3

    def defended(gradient):
        return lambda x: robustness.defended_logits(model, x, refine, gradient, seed)

    bpda = _input_gradient(images, labels, defended("bpda"))
    unrolled = _input_gradient(images, labels, defended("unrolled"))
    # The refined point, with the documented seeds (one copy, so no copy noise).
    _, sgld_seed = tf.unstack(tf.random.split(tf.constant([seed, 0]), 2))
    refined = robustness._refine(model, tf.constant(images), refine, sgld_seed)
    assert np.abs(refined.numpy() - images).max() > 0.05
    plain_at_refined = _input_gradient(refined.numpy(), labels, model)
    np.testing.assert_allclose(bpda, plain_at_refined, atol=1e-6)
    # Differentiating through the chain adds the SGLD step's Jacobian.
    assert np.abs(unrolled - bpda).max() > 0.05 * np.abs(bpda).max()
    # And neither is the gradient at the unrefined input.
    assert np.abs(_input_gradient(images, labels, model) - bpda).max() > 1e-3


def _plain_pgd(model, images, labels, norm, epsilon, steps, step_size):
    """PGD by hand on the undefended model, from the clean images."""
    x = images.copy()
    for _ in range(steps):
        grad = _input_gradient(x, labels, model)
        if norm == "linf":
            x = x + step_size * np.sign(grad)
            delta = np.clip(x - images, -epsilon, epsilon)
        else:
            length = np.linalg.norm(grad.reshape(len(x), -1), axis=1)
            x = x + step_size * grad / (length[:, None, None, None] + 1e-12)
            delta = x - images
            length = np.linalg.norm(delta.reshape(len(x), -1), axis=1)
            delta *= np.minimum(1, epsilon / (length + 1e-12))[:, None, None, None]
        x = np.clip(images + delta, -1, 1)
    return x


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.2), ("l2", 1.0)])
def test_both_gradients_without_refinement_are_plain_pgd(trained_model, norm, epsilon):
    model, images, labels = trained_model
    expected = _plain_pgd(model, images, labels, norm, epsilon, 3, epsilon / 2)
    assert np.abs(expected - images).max() > 0.1 * epsilon
    plain = robustness.Refinement(
        steps=0, step_size=0.5, noise_std=0.01, noisy_copies=1, copy_noise_std=0.0
    )
    for gradient in robustness.GRADIENTS:
        adversarial = robustness.pgd_attack(
            model,
            images,
            labels,
            norm,
            epsilon,
            steps=3,
            step_size=epsilon / 2,
            random_start=False,
            refinement=plain,
            gradient=gradient,
        ).numpy()
        np.testing.assert_allclose(adversarial, expected, atol=1e-5, err_msg=gradient)


@pytest.mark.parametrize("steps", [0, 1])
def test_noisy_copies_average_the_copies_logits(trained_model, steps):
    model, images, _ = trained_model
    images = images[:8]
    copies, sigma, seed = 3, 0.1, 5
    refine = robustness.Refinement(
        steps=steps,
        step_size=0.5,
        noise_std=0.01,
        noisy_copies=copies,
        copy_noise_std=sigma,
    )
    logits = robustness.defended_logits(model, images, refine, seed=seed).numpy()
    # By hand, with the documented seeds: copy k of image n is row n * copies + k.
    copy_seed, sgld_seed = tf.unstack(tf.random.split(tf.constant([seed, 0]), 2))
    noise = tf.random.stateless_normal((8 * copies, 8, 8, 1), copy_seed).numpy()
    sgld_noise = tf.random.stateless_normal(
        (8 * copies, 8, 8, 1), tf.random.experimental.stateless_fold_in(sgld_seed, 0)
    ).numpy()
    expected = np.zeros_like(logits)
    for n in range(8):
        for k in range(copies):
            row = n * copies + k
            x = tf.constant(images[n : n + 1] + sigma * noise[row : row + 1])
            if steps:
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    log_px = tf.reduce_logsumexp(model(x), axis=-1)
                x = x + 0.5 * tape.gradient(log_px, x) + 0.01 * sgld_noise[row]
            expected[n] += model(x).numpy()[0] / copies
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(logits - model(images).numpy()).max() > 1e-3


@pytest.mark.parametrize("gradient", robustness.GRADIENTS)
def test_pgd_through_sgld_refinement(trained_model, gradient):
    model, images, labels = trained_model
    refine = robustness.Refinement(steps=2, step_size=0.5, noise_std=0.0)
    unrefined = robustness.pgd_attack(model, images, labels, "linf", 0.2, steps=3)
    adversarial = robustness.pgd_attack(
        model,
        images,
        labels,
        "linf",
        0.2,
        steps=3,
        refinement=refine,
        gradient=gradient,
    ).numpy()
    assert np.abs(adversarial - images).max() <= 0.2 + 1e-6
    # Same seed and start: only the refinement in the attacked model differs, and
    # it must change where the attack goes.
    changed = np.abs(adversarial - unrefined.numpy()) > 1e-4
    assert changed.mean() > 0.05, changed.mean()


def test_defence_settings_are_checked(trained_model):
    model, images, labels = trained_model
    with pytest.raises(ValueError, match="Unknown PGD norm 'l1'"):
        robustness.pgd_attack(model, images, labels, "l1", 0.1)
    with pytest.raises(ValueError, match="Unknown PGD gradient 'exact'"):
        robustness.pgd_attack(model, images, labels, "linf", 0.1, gradient="exact")
    with pytest.raises(ValueError, match="noisy_copies >= 1"):
        robustness.predict_labels(model, images, robustness.Refinement(noisy_copies=0))


# Report and CLI -------------------------------------------------------------------


def tiny_eval_config():
    config = mnist5k_hdge.get_config()
    config.eval.ood_sets = ("digits", "interp", "noise")
    config.eval.max_examples = 64
    config.eval.ece_bins = 10
    config.eval.pgd.num_examples = 16
    config.eval.pgd.steps = 2
    config.eval.pgd.epsilons.linf = (0.0, 0.2)
    config.eval.pgd.epsilons.l2 = (0.0, 2.0)
    return config


@pytest.fixture(scope="module")
def mnist_model():
    return HDGEClassifier(tiny_backbone(10, (32, 32, 1)), queue_size=64)


def test_report_files_hold_the_returned_numbers(tmp_path, mnist_model):
    config = tiny_eval_config()
    # A TFDS set that is not prepared (and may not download) is reported, not fatal.
    config.eval.ood_sets = (*config.eval.ood_sets, "svhn_cropped")
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.download = False
    result = report.run_evaluation(mnist_model, config, tmp_path)
    for name in ("report.json", "report.md", "reliability.png", "robustness.png"):
        assert (tmp_path / name).is_file(), name
    for score in ood.SCORES:
        assert (tmp_path / f"ood_{score}.png").is_file(), score
    assert json.loads((tmp_path / "report.json").read_text()) == result

    # The numbers are those of the library functions on the same noisy inputs.
    from hdge_tf.data import load_arrays

    x_test, y_test = load_arrays("mnist5k", "test", limit=64)
    noisy = protocol.add_input_noise(x_test, 0.03, [0, 0])
    logits = mnist_model.predict(noisy, verbose=0)
    expected = calibration.classification_metrics(logits, y_test)
    for key in ("accuracy", "nll", "brier"):
        assert result["classification"][key] == pytest.approx(expected[key], rel=1e-5)
    assert result["calibration"]["ece"] == pytest.approx(
        calibration.expected_calibration_error(logits, y_test, 10), rel=1e-5
    )
    interp = ood_data.load_ood_set("interp", x_test, seed=0)
    out = ood.compute_scores(
        mnist_model, protocol.add_input_noise(interp, 0.03, [0, 2]), ["log_px"]
    )
    auroc = ood.auroc(ood.log_px(logits), out["log_px"])
    assert result["ood"]["sets"]["interp"]["scores"]["log_px"]["auroc"] == (
        pytest.approx(auroc)
    )
    assert set(result["ood"]["sets"]) == {"digits", "interp", "noise", "svhn_cropped"}
    assert "not prepared" in result["ood"]["sets"]["svhn_cropped"]["error"]
    assert result["ood"]["sets"]["digits"]["num_examples"] == 64
    linf = result["robustness"]["accuracy"]["linf"]
    assert [p["epsilon"] for p in linf] == [0.0, 0.2]
    assert len(result["robustness"]["accuracy"]["l2"]) == 2
    # JEM's defended model and gradient, as configured by default.
    assert result["robustness"]["gradient"] == "bpda"
    defence = result["robustness"]["defence"]
    assert defence["noisy_copies"] == 5 and defence["copy_noise_std"] == 0.03

    markdown = (tmp_path / "report.md").read_text()
    assert f"| accuracy | {result['classification']['accuracy']:.4f} |" in markdown
    assert f"{auroc:.4f}" in markdown and "![robustness](robustness.png)" in markdown
    assert "| svhn_cropped | unavailable |" in markdown
    assert "logits averaged over 5 copies x + 0.03 N(0, I)" in markdown
    assert "attack gradient BPDA" in markdown
    # The gate on an all-black and an all-white image, by its own thresholds.
    gate = result["gate"]
    blank = stages.blank_images((32, 32, 1), gate["input_range"])
    np.testing.assert_array_equal(blank.reshape(2, -1).min(-1), [-1.0, 1.0])
    np.testing.assert_array_equal(blank.reshape(2, -1).max(-1), [-1.0, 1.0])
    scores = logsumexp(mnist_model.predict(blank, verbose=0), axis=-1)
    admitted = (scores >= gate["threshold"]) & (scores <= gate["upper_threshold"])
    assert gate["density_only"]["blank"] == pytest.approx(admitted.mean())
    assert gate["blank"] == 0.0  # flat: rejected whatever their log p(x)
    assert "| blank: all-black, all-white (false-positive rate) |" in markdown


def test_report_rejects_unknown_names_before_computing(tmp_path, mnist_model):
    config = tiny_eval_config()
    config.eval.ood_sets = ("digits", "cifar-10")
    with pytest.raises(ValueError, match="Unknown OOD set 'cifar-10'"):
        report.run_evaluation(mnist_model, config, tmp_path)
    config = tiny_eval_config()
    config.eval.pgd.gradient = "straight_through"
    with pytest.raises(ValueError, match="Unknown PGD gradient 'straight_through'"):
        report.run_evaluation(mnist_model, config, tmp_path)
    assert not (tmp_path / "report.json").exists()
    assert not list(tmp_path.glob("*.png"))  # nothing was computed


def test_report_of_a_model_for_other_images_names_both_shapes(tmp_path):
    """A model built for 8x8 images on the 32x32 test split: one line with both
    shapes before any graph runs, and no report directory."""
    model = HDGEClassifier(tiny_backbone(10, (8, 8, 1)), queue_size=64)
    with pytest.raises(ValueError) as error:
        report.run_evaluation(model, tiny_eval_config(), tmp_path / "eval")
    assert str(error.value) == (
        "The test images of data.name='mnist5k' have shape (64, 32, 32, 1), but the "
        "model takes images of shape (batch, 8, 8, 1) [batch, height, width, "
        "channels]."
    )
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_cli_writes_the_report_with_overrides(tmp_path):
    HDGEClassifier(tiny_backbone(10, (32, 32, 1)), queue_size=64).save(
        tmp_path / "model.keras"
    )
    (tmp_path / "config.json").write_text(tiny_eval_config().to_json())
    result = cli.call(
        hdge_eval,
        [
            f"--workdir={tmp_path}",
            "--config.eval.ood_sets=('noise',)",
            "--config.eval.pgd.norms=('l2',)",
            "--config.eval.scores=('log_px','contrast')",
        ],
    )
    assert result.status == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert list(written["ood"]["sets"]) == ["noise"]
    assert list(written["ood"]["sets"]["noise"]["scores"]) == ["log_px", "contrast"]
    assert list(written["robustness"]["accuracy"]) == ["l2"]
    assert written["classification"]["num_examples"] == 64  # from config.json
