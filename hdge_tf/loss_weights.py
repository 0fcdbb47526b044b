"""The loss terms' weights as one object: `LossWeights`.

HDGE's loss is a weighted sum of terms (`TERMS`): CE, the contrastive -log p(x|y)
and -log p(x), JEM's SGLD terms for log p(x) and log p(x|y) and the energy L2
penalty. `HDGEClassifier` holds the weights as one value, `model.loss_weights`,
read by term name (`model.loss_weights["ce"]`). The trainer's config keeps flat
`loss.*_weight` keys, and models saved before the weights were one object carry
those flat keys in their Keras config (and `HDGEClassifier(..., ce_weight=...)`
still takes them): `FLAT_KEYS` maps both onto the fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import keras

from hdge_tf.flat_keyed import FlatKeyed

# Flat key (trainer config `loss.*`, older model configs and keyword
# arguments) -> LossWeights field, the name of the term it weights.
FLAT_KEYS = {
    "ce_weight": "ce",
    "pxy_contrast_weight": "pxy_contrast",
    "px_contrast_weight": "px_contrast",
    "px_sgld_weight": "px_sgld",
    "pxy_sgld_weight": "pxy_sgld",
    "energy_l2_weight": "energy_l2",
}
# The loss terms, in the order the model reports them.
TERMS = tuple(FLAT_KEYS.values())


@keras.saving.register_keras_serializable(package="hdge_tf")
@dataclasses.dataclass(frozen=True)
class LossWeights(FlatKeyed, Mapping):
    """The weight of each loss term (0 disables a term); a read-only mapping
    from term name to weight.

    Args:
      ce: α of -log p(y|x), the cross-entropy.
      pxy_contrast, px_contrast: the contrastive -log p(x|y) (HDGE's term, 1 - α
        in the paper) and -log p(x) (`hdge_tf.losses`).
      px_sgld, pxy_sgld: JEM's SGLD maximum-likelihood terms for log p(x) and
        log p(x|y) (`losses.sgld_nll_x`); either > 0 gives the model a replay
        buffer (`hdge_tf.jem_terms`).
      energy_l2: λ of mean(E_data² + E_sample²) over the SGLD terms; a model
        without an SGLD term has nothing to penalize and holds 0. It caps the
        data's labelled logit (`hdge_tf.energy_penalty`).
    """

    FLAT_KEYS = FLAT_KEYS

    ce: float = 1.0
    pxy_contrast: float = 1.0
    px_contrast: float = 0.0
    px_sgld: float = 0.0
    pxy_sgld: float = 0.0
    energy_l2: float = 0.0

    def __post_init__(self):
        # Plain floats (from ints, NumPy's and configs' numbers), so that equal
        # weights compare equal and serialize to plain JSON.
        for name in TERMS:
            object.__setattr__(self, name, float(getattr(self, name)))

    def __getitem__(self, term: str) -> float:
        if term not in TERMS:
            raise KeyError(term)
        return getattr(self, term)

    def __iter__(self) -> Iterator[str]:
        return iter(TERMS)

    def __len__(self) -> int:
        return len(TERMS)

    @property
    def sgld_on(self) -> bool:
        """Whether an SGLD term is on (then the model runs SGLD chains)."""
        return self.px_sgld > 0 or self.pxy_sgld > 0


def split_flat(kwargs: Mapping) -> tuple[dict, LossWeights | None]:
    """(kwargs without the flat weight keys, the weights those keys name, or
    None without any): what a trainer config's `loss` section, an older model
    config or flat keyword arguments hold, in the form
    `HDGEClassifier(..., loss_weights=...)` takes."""
    rest = {k: v for k, v in kwargs.items() if k not in FLAT_KEYS}
    if len(rest) == len(kwargs):
        return rest, None
    return rest, LossWeights.from_flat(kwargs)
