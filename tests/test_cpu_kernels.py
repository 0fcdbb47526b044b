"""Importing hdge_tf prefers TensorFlow's oneDNN CPU kernels, without overriding a
user's choice or a TensorFlow that is already loaded."""

import os
import subprocess
import sys

import pytest

from hdge_tf import cpu_kernels


def _in_fresh_python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != cpu_kernels.ENV_VAR}
    environ.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-1]


REPORT = (
    "import os; from hdge_tf import cpu_kernels; "
    "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), cpu_kernels.onednn_enabled(), "
    "sep=',')"
)


# Our default in a fresh process, and TensorFlow imported first, are
# test_import.py's fresh and loaded processes.
@pytest.mark.slow  # a subprocess importing TensorFlow
def test_import_leaves_a_users_choice_alone():
    assert _in_fresh_python(f"import hdge_tf; {REPORT}", TF_ENABLE_ONEDNN_OPTS="0") == (
        "0,False"
    )


def test_prefer_onednn_leaves_set_values_and_loaded_tensorflow_alone():
    # TensorFlow is loaded in this process: nothing to choose any more.
    environ = {}
    assert cpu_kernels.prefer_onednn(environ) is False and environ == {}


def test_tests_run_the_kernels_users_get():
    # conftest imports hdge_tf before TensorFlow, as a user's program does: the
    # variable is set (by us, or by whoever ran the tests) and TF obeyed it.
    assert cpu_kernels.onednn_enabled() == (os.environ[cpu_kernels.ENV_VAR] == "1")
