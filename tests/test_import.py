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

# Imports hdge_tf under the backend the environment chose, draws every kind of
# figure the library writes, and reports what the process looks like after.
_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, sys
    from pathlib import Path

    import numpy as np

    import hdge_tf
    from hdge_tf import plots
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
        "backend": matplotlib.get_backend(),
        "pyplot_figures": plt.get_fignums(),
        "matplotlib_log_level": logging.getLogger("matplotlib").level,
        "tf_cpp_min_log_level": os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
    }))
    """
)


@pytest.mark.slow
def test_import_keeps_the_matplotlib_backend_and_figures_still_render(tmp_path):
    env = {**os.environ, "MPLBACKEND": "svg"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state == {
        "backend": "svg",
        "pyplot_figures": [],  # drawn on their own canvases, not pyplot's
        "matplotlib_log_level": 0,  # NOTSET: log filtering is the programs' job
        "tf_cpp_min_log_level": None,
    }
    for name in ("curves.png", "grid.png", "reliability.png", "pgd.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
