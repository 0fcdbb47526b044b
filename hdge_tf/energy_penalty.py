"""What the energy L2 penalty does to p(y|x): the cap it puts on the data's
labelled logit, and the confidence a right example settles at.

λ·(E_data² + E_sample²) (`LossWeights.energy_l2`) keeps JEM's SGLD terms stable,
and holds the logits back: a model whose confident logits need more than the cap
stays under-confident. The trainer warns about such a config before it trains
(`warn_if_capped`).
"""

from __future__ import annotations

import math

import numpy as np
from absl import logging

# Bisection steps of `settled_confidence` (the interval shrinks to 2^-60 of the cap).
_BISECTION_STEPS = 60


def _penalty(model) -> float:
    """λ, or 0 where it puts no cap on the logits themselves: without the
    penalty, or with a learned energy scale (the cap is then on β·f_y)."""
    if getattr(model, "energy_scale", None) is not None:
        return 0.0
    return model.loss_weights["energy_l2"]


def energy_cap(model) -> float:
    """Where the energy L2 penalty holds an HDGEClassifier's labelled logit on the
    data: inf without it.

    A data term's gradient pulls log p̃(x) up with weight w (the SGLD terms'
    weights) and CE pushes f_y up by α(1 - p_y); λ·E² pulls it back by 2λE. They
    balance at f_y ≈ (w + α(1 - p_y)) / (2λ) <= (w + α) / (2λ): a model whose
    confident logits need more than that stays under-confident. A learned
    energy scale moves the cap onto β·f_y, so f_y itself has none.
    """
    weights, penalty = model.loss_weights, _penalty(model)
    if not penalty:
        return float("inf")
    return (weights["px_sgld"] + weights["pxy_sgld"] + weights["ce"]) / (2.0 * penalty)


def settled_confidence(model) -> float:
    """p(y|x) where the energy penalty settles a right example once the SGLD
    samples look like the data (1 without the penalty).

    Then a data term and the sample term beside it cancel, and only CE's
    α(1 - p) pushes the labelled logit against the penalty's 2λf: f settles at
    α(1 - p) / (2λ) with p = 1 / (1 + (C - 1) e^-f) (the other logits near 0),
    far below `energy_cap`. Solved by bisection on f. A bound, not a forecast:
    the log p(x|y) term's samples also pull f_y down near the data
    (docs/hdge_jem.md measured ECE 0.04 where this says 0.993).
    """
    penalty = _penalty(model)
    if not penalty:
        return 1.0
    ce, rest = model.loss_weights["ce"], model.num_classes - 1
    low, high = 0.0, energy_cap(model)
    for _ in range(_BISECTION_STEPS):
        logit = (low + high) / 2
        confidence = 1.0 / (1.0 + rest * math.exp(-logit))
        if ce * (1 - confidence) > 2 * penalty * logit:
            low = logit
        else:
            high = logit
    return 1.0 / (1.0 + rest * math.exp(-low))


def warn_if_capped(model) -> None:
    """Warns when the energy penalty keeps a right example's p(y|x) below 99%:
    always (its labelled logit capped below the log(99 (C - 1)) that needs, the
    other logits near 0), or once the SGLD samples look like the data; logs the
    cap at INFO otherwise."""
    needed = float(np.log(99.0 * (model.num_classes - 1)))
    cap, settled = energy_cap(model), settled_confidence(model)
    if cap < needed or settled < 0.99:
        logging.warning(
            "loss.energy_l2_weight caps the data's labelled logit near %.1f "
            "((SGLD weight + CE weight) / (2 * energy_l2_weight); %.1f gives 99%% "
            "confidence), and once samples look like the data it settles where "
            "p(y|x) = %.3f: expect an under-confident model (high ECE). Lower "
            "loss.energy_l2_weight.",
            cap,
            needed,
            settled,
        )
    elif np.isfinite(cap):
        logging.info(
            "Energy L2 penalty: labelled logits capped near %.1f, settling at "
            "p(y|x) = %.3f.",
            cap,
            settled,
        )
