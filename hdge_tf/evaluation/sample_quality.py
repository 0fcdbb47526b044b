"""Sample quality without downloads: an independent classifier as the judge.

The papers score samples with IS and FID, which read an ImageNet Inception network
that cannot be downloaded here and knows nothing of digits. At embedded scale a
plain cross-entropy classifier trained on the same training images plays its part
(`SampleJudge`): its p(y|x) gives an Inception-score analogue and "the fraction
of conditional samples it assigns to their class", its penultimate features a
Fréchet distance. Real test images scored the same way give the ceiling. The
numbers compare runs of one setup; they are not comparable with CIFAR IS/FID.
"""

from __future__ import annotations

import keras
import numpy as np

from hdge_tf import energy


class SampleJudge:
    """An independent classifier's view of images in [-1, 1] (clipped first:
    SGLD samples may leave the data range, real images never do)."""

    def __init__(self, model: keras.Model, batch_size: int = 256):
        network = getattr(model, "backbone", model)
        head = network.layers[-1]
        if not isinstance(head, keras.layers.Dense):
            raise ValueError(
                f"The judge's network {network.name!r} must end in its Dense logits "
                f"layer (its input is the feature space), not {type(head).__name__}."
            )
        self._network = network
        self._features = keras.Model(network.inputs, head.input)
        self._batch_size = batch_size

    def _inputs(self, images) -> np.ndarray:
        return np.clip(np.asarray(images, np.float32), -1.0, 1.0)

    def probabilities(self, images) -> np.ndarray:
        """p(y|x), [N, classes]."""
        logits = energy.predict_logits(
            self._network, self._inputs(images), self._batch_size
        )
        return _softmax(np.asarray(logits, np.float64))

    def features(self, images) -> np.ndarray:
        """Penultimate features (the logits layer's input), [N, D] float64."""
        return np.asarray(
            self._features.predict(
                self._inputs(images), batch_size=self._batch_size, verbose=0
            ),
            np.float64,
        )

    def score(self, images, labels=None, reference_features=None) -> dict:
        """IS analogue, Fréchet distance to `reference_features` (when given),
        the images' value range (the judge sees them clipped) and, for
        conditional images with `labels`, the fraction assigned to their class,
        overall and per class."""
        probs = self.probabilities(images)
        result = {
            "num_images": len(probs),
            "inception_score": inception_score(probs),
            **value_range(images),
        }
        if reference_features is not None:
            result["frechet_distance"] = frechet_distance(
                self.features(images), reference_features
            )
        if labels is not None:
            result["class_agreement"] = class_agreement(probs, labels)
            per_class = class_agreement_per_class(probs, labels)
            result["class_agreement_per_class"] = per_class
            result["worst_class_agreement"] = min(per_class)
        return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def inception_score(probs) -> float:
    """exp(E_x KL(p(y|x) || p(y))), p(y) the mean prediction: 1 when every image
    gets the same prediction, the number of classes when predictions are
    confident and spread evenly over the classes."""
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    marginal = probs.mean(axis=0, keepdims=True)
    kl = np.sum(probs * (np.log(probs) - np.log(marginal)), axis=1)
    return float(np.exp(kl.mean()))


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets:
    |mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^½) (FID's formula).

    Tr (S_a S_b)^½ is computed as the sum of the square roots of the eigenvalues
    of S_a^½ S_b S_a^½, a symmetric PSD matrix with the same spectrum, which
    avoids the complex round-off of a general matrix square root."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"Feature sets must be [N, D] alike; got {a.shape}, {b.shape}."
        )
    if min(len(a), len(b)) < 2:
        raise ValueError("A Fréchet distance needs at least 2 images per set.")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0.0, None)).sum()
    distance = (
        np.sum((mean_a - mean_b) ** 2)
        + np.trace(cov_a)
        + np.trace(cov_b)
        - 2.0 * trace_root
    )
    return float(max(distance, 0.0))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def class_agreement(probs, labels) -> float:
    """Fraction of images whose most probable class is their label."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} predictions for {len(labels)} labels.")
    return float(np.mean(probs.argmax(axis=1) == labels))


def class_agreement_per_class(probs, labels) -> list[float]:
    """`class_agreement` of each class's images, in class order (the classes
    present in `labels`)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    return [
        class_agreement(probs[labels == c], labels[labels == c])
        for c in np.unique(labels)
    ]


def value_range(images, low: float = -1.0, high: float = 1.0) -> dict:
    """The pixel range of `images` and the fraction of images wholly inside
    [low, high] (to float32 rounding): SGLD chains that are not clipped leave it."""
    images = np.asarray(images, np.float32).reshape(len(images), -1)
    tolerance = 1e-6
    inside = (images.min(1) >= low - tolerance) & (images.max(1) <= high + tolerance)
    return {
        "min_value": float(images.min()),
        "max_value": float(images.max()),
        "in_range_fraction": float(inside.mean()),
    }
