"""TensorFlow's oneDNN CPU kernels, preferred before TensorFlow is imported.

TensorFlow picks its CPU convolution kernels when it loads: oneDNN's where
`TF_ENABLE_ONEDNN_OPTS` says so, and by default only on CPUs with AVX512-class
features; Eigen's elsewhere, e.g. on AVX2-only AMD EPYC hosts. There, oneDNN
trained WRN-16-4 1.15-1.2x faster and the demo CNN 1.2-1.5x faster than Eigen,
mostly in the convolutions' backward passes (BENCHMARKS.md). So importing
`hdge_tf` turns oneDNN on, unless the variable is already set (set
`TF_ENABLE_ONEDNN_OPTS=0` for Eigen) or TensorFlow was imported first, which
fixed the choice already (`onednn_enabled` says what it is). GPUs are unaffected.

Importing this module calls `prefer_onednn`; it must not import TensorFlow.
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn(environ: dict | None = None) -> bool:
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` unless it is set or TensorFlow is loaded;
    True if this call set it."""
    environ = os.environ if environ is None else environ
    if ENV_VAR in environ or "tensorflow" in sys.modules:
        return False
    environ[ENV_VAR] = "1"
    return True


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its CPU ops with oneDNN."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


prefer_onednn()
