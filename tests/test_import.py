"""`import hdge_tf` leaves the caller's process as it was (except the documented
oneDNN preference, hdge_tf/cpu_kernels.py): a notebook's matplotlib backend, its
pyplot figures and its logging stay as the user set them."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A fresh process under the backend the environment chose: imports hdge_tf first
# thing, notes what that changed (the top-level modules it loaded, the
# environment, the CPU kernels TensorFlow chose), then draws every kind of figure
# the library writes and reports what the process looks like after.
_FRESH_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, sys
    from pathlib import Path

    environ = dict(os.environ)
    import hdge_tf

    modules = [m for m in sys.modules if "." not in m and m != "hdge_tf"]
    changed = {k: v for k, v in os.environ.items() if environ.get(k) != v}

    import numpy as np

    from hdge_tf import cpu_kernels, plots
    from hdge_tf.evaluation import figures

    out = Path(sys.argv[1])
    history = out / "history.csv"
    history.write_text("epoch,accuracy,loss\\n0,0.5,2.0\\n1,0.6,1.5\\n")
    plots.plot_history(history, out / "curves.png")
    plots.plot_image_grid(np.zeros((4, 8, 8, 1)), out / "grid.png")
    bins = {k: np.array([0.25, 0.5]) for k in ("accuracy", "confidence", "count")}
    bins.update(lower=np.array([0.0, 0.5]), upper=np.array([0.5, 1.0]))
    figures.reliability_diagram(bins, 0.1, out / "reliability.png")
    figures.robustness_curves({"linf": ([0, 0.1], [0.9, 0.5])}, out / "pgd.png")

    import matplotlib
    import matplotlib.pyplot as plt

    print(json.dumps({
        "modules": modules,
        "environ": changed,
        "onednn_enabled": cpu_kernels.onednn_enabled(),
        "backend": matplotlib.get_backend(),
        "pyplot_figures": plt.get_fignums(),
        "matplotlib_log_level": logging.getLogger("matplotlib").level,
        "tf_cpp_min_log_level": os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
    }))
    """
)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict:
    """What `_FRESH_SCRIPT` reports, run under MPLBACKEND=svg without TF_*
    variables, and the directory it drew its figures in."""
    out = tmp_path_factory.mktemp("fresh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return {
        **_last_json_line(_FRESH_SCRIPT, {**env, "MPLBACKEND": "svg"}, str(out)),
        "out": out,
    }


@pytest.mark.slow
def test_import_keeps_the_matplotlib_backend_and_figures_still_render(fresh):
    shown = ("backend", "pyplot_figures", "matplotlib_log_level")
    assert {k: fresh[k] for k in (*shown, "tf_cpp_min_log_level")} == {
        "backend": "svg",
        "pyplot_figures": [],  # drawn on their own canvases, not pyplot's
        "matplotlib_log_level": 0,  # NOTSET: log filtering is the programs' job
        "tf_cpp_min_log_level": None,
    }
    for name in ("curves.png", "grid.png", "reliability.png", "pgd.png"):
        assert (fresh["out"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_a_fresh_import_prefers_onednn(fresh):
    """hdge_tf/cpu_kernels.py's default, in a process where nobody chose
    (test_cpu_kernels.py: a user's choice)."""
    assert fresh["environ"].get("TF_ENABLE_ONEDNN_OPTS") == "1"
    assert fresh["onednn_enabled"] is True


# Reports what `import hdge_tf` changes in a process that first imported the other
# top-level modules a fresh import loads (argv[1]), so that what changes is
# hdge_tf's own doing.
_STATE_SCRIPT = textwrap.dedent(
    """
    import importlib, json, logging, os, sys, warnings

    def state():
        import absl.flags, absl.logging

        loggers = {"": logging.getLogger(), **logging.root.manager.loggerDict}
        return {
            "loggers": {
                name: [
                    logger.level,
                    logger.propagate,
                    logger.disabled,
                    [f"{type(h).__name__}:{h.level}" for h in logger.handlers],
                    len(logger.filters),
                ]
                for name, logger in loggers.items()
                if isinstance(logger, logging.Logger)
            },
            "logging_disabled": logging.root.manager.disable,
            "absl_verbosity": absl.logging.get_verbosity(),
            "absl_handler_level": absl.logging.get_absl_handler().level,
            "flags": sorted(absl.flags.FLAGS),
            "warning_filters": [repr(f) for f in warnings.filters],
            "stderr": [os.fstat(2).st_dev, os.fstat(2).st_ino, id(sys.stderr)],
            "environ": dict(os.environ),
        }

    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except Exception:  # e.g. a module only its package can import
            pass
    before = state()
    import hdge_tf

    after = state()
    print(json.dumps({k: [before[k], after[k]] for k in before}))
    """
)


def _last_json_line(script: str, env: dict, *args: str) -> dict:
    """The JSON a fresh Python process running `script` prints last."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_import_leaves_logging_flags_and_environment_as_they_were(fresh):
    """Loggers (Python's and absl's), absl flags, warning filters, stderr and the
    environment are as before `import hdge_tf`, once its dependencies are
    loaded (TensorFlow sets variables of its own; TensorFlow loaded first, the
    oneDNN preference is TensorFlow's own: hdge_tf/cpu_kernels.py); a fresh import
    adds only the oneDNN preference. TensorFlow's start-up notices are held back
    only in the hdge-* programs (hdge_tf/startup.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    loaded = _last_json_line(_STATE_SCRIPT, env, json.dumps(fresh["modules"]))
    for key, (before, after) in loaded.items():
        if key == "loggers":  # new loggers as logging.getLogger leaves them
            new = {name: after.pop(name) for name in set(after) - set(before)}
            assert all(s == [0, True, False, [], 0] for s in new.values()), new
        assert after == before, key
    environ = loaded["environ"][0]
    assert "TF_ENABLE_ONEDNN_OPTS" not in loaded["environ"][1]
    from_dependencies = {k: environ[k] for k in fresh["environ"] if k in environ}
    assert fresh["environ"] == {**from_dependencies, "TF_ENABLE_ONEDNN_OPTS": "1"}
