"""What a user of hdge-train reads: the run's start, one line per epoch, the final
metrics; TensorFlow's notices and INFO logs only with --verbosity=1
(hdge_tf/progress.py, hdge_tf/startup.py, bin/cli.py)."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import smoke_flags

from hdge_tf import plots, progress, startup

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^epoch +\d+/\d+: loss ")
NOISE = ("oneDNN", "cuda", "cuInit", "functional_saver", "absl::InitializeLog")


def test_duration_reads_as_seconds_minutes_hours():
    assert [progress.duration(s) for s in (0, 41.6, 185, 3725, -3)] == [
        "0s",
        "42s",
        "3m05s",
        "1h02m",
        "0s",
    ]


def test_epoch_line_shows_losses_accuracies_time_and_eta():
    logs = {
        "loss": 10.29617,
        "ce": 2.13141,
        "pxy_contrast": 8.16481,
        "accuracy": 0.26272,
        "top_logit": 0.66,
        "skipped_steps": 0.0,
        "val_loss": 9.7641,
        "val_ce": 1.6918,
        "val_pxy_contrast": 8.0723,
        "val_accuracy": 0.364,
    }
    line = progress.epoch_line(2, 20, logs, 3.4, 61.0)
    assert line == (
        "epoch  2/20: loss 10.2962 (ce 2.1314, pxy_contrast 8.1648), accuracy 0.2627; "
        "validation loss 9.7641 (ce 1.6918, pxy_contrast 8.0723), accuracy 0.3640; "
        "3s, ETA 1m01s"
    )
    # The last epoch has no ETA; a skipped step is shown; no validation, no part.
    last = progress.epoch_line(20, 20, {"loss": 1.0, "skipped_steps": 2.0}, 5, 0.0)
    assert last == "epoch 20/20: loss 1.0000; skipped steps 2; 5s"


class _Clock:
    """Epoch k (0-based) takes durations[k] seconds."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = list(durations), 0.0, 0

    def __call__(self):
        # Called at each epoch's begin and end: advance at the ends.
        if self.calls % 2:
            self.now += self.durations[self.calls // 2]
        self.calls += 1
        return self.now


def test_epoch_log_prints_one_line_per_epoch_with_an_eta_past_the_first_epoch():
    lines = []
    callback = progress.EpochLog(print_fn=lines.append, clock=_Clock([30, 4, 6, 5]))
    callback.set_params({"epochs": 5, "steps": 3, "verbose": 1})
    callback.on_train_begin()
    for epoch in range(4):
        callback.on_epoch_begin(epoch)
        callback.on_train_batch_end(0, {"loss": 1.0})  # nothing per step
        callback.on_epoch_end(epoch, {"loss": 1.0 - epoch / 10, "accuracy": 0.5})
    assert len(lines) == 4
    assert lines[0] == "epoch 1/5: loss 1.0000, accuracy 0.5000; 30s, ETA 2m00s"
    # The first epoch (tracing) is left out of the mean once others exist.
    assert lines[1].endswith("; 4s, ETA 12s")  # 3 left x 4s
    assert lines[2].endswith("; 6s, ETA 10s")  # 2 left x mean(4, 6)
    assert lines[3] == "epoch 4/5: loss 0.7000, accuracy 0.5000; 5s, ETA 5s"


def test_epoch_log_replaces_keras_progress_bar_in_fit(capsys, separable_data):
    """In a Keras user's `fit` (verbose=1 or 2) it is the only progress output."""
    images, labels = separable_data
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        images,
        labels,
        epochs=2,
        batch_size=32,
        verbose=1,
        validation_data=(images, labels),
        callbacks=[progress.EpochLog()],
    )
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(EPOCH_LINE.match(line) for line in out), out
    assert "validation loss" in out[0] and "ETA" in out[0] and "ETA" not in out[1]


def test_final_lines_name_the_kept_epoch_and_the_files(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    metrics = {
        "test_accuracy": 0.95,
        "test_nll": 0.2,
        "test_brier": 0.07,
        "test_ece": 0.012,
        "ood_auroc_log_px_noise": 0.9,
        "selected_epoch": 18,
        "epochs": 20,
        "selected_val_accuracy": 0.952,
    }
    assert progress.final_lines(metrics, tmp_path) == [
        "Test (epoch 18 of 20, best validation accuracy 0.9520): accuracy 0.9500, "
        "NLL 0.2000, Brier 0.0700, ECE 0.0120",
        "log p(x) OOD AUROC: noise 0.900",
        f"Wrote {tmp_path / 'metrics.json'}",
    ]


@pytest.mark.parametrize(
    "argv, orig_argv, args",
    [
        (["/venv/bin/hdge-train", "--workdir=w"], [], ["--workdir=w"]),
        (["-m"], ["python", "-m", "hdge_tf.bin.hdge_eval", "-v", "1"], ["-v", "1"]),
        (["script.py", "-x"], ["python", "script.py", "-x"], None),
        (["-m"], ["python", "-m", "pytest", "-q"], None),
    ],
)
def test_program_args_only_for_hdge_programs(argv, orig_argv, args):
    assert startup.program_args(argv, orig_argv) == args


@pytest.mark.parametrize(
    "args, value",
    [
        ([], None),
        (["--verbosity=1"], 1),
        (["--config=c.py", "--verbosity", "2"], 2),
        (["-v", "0"], 0),
        (["--v=-1"], -1),
        (["--verbosity=x"], None),
        (["--config.verbosity=3"], None),
    ],
)
def test_verbosity_is_read_from_the_command_line(args, value):
    assert startup.verbosity(args) == value


def test_stderr_filtered_drops_only_the_noise(capfd):
    with startup.stderr_filtered(startup.START_UP_NOISE):
        os.write(
            2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n"
        )
        os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit\n")
        os.write(2, b"E0000 00:00:1.0 1 some.cc:1] a real error\n")
        sys.__stderr__.write("a Python warning\n")  # on file descriptor 2
    assert capfd.readouterr().err == (
        "E0000 00:00:1.0 1 some.cc:1] a real error\na Python warning\n"
    )


def _rows(skipped=0.0):
    return [
        {
            "epoch": str(e),
            "accuracy": "0.5",
            "loss": "2.0",
            "skipped_steps": str(skipped if e == 1 else 0.0),
            "val_accuracy": "0.4",
            "val_loss": "2.1",
        }
        for e in range(3)
    ]


def test_history_figure_says_validation_and_drops_a_zero_skipped_steps_panel():
    fig = plots.history_figure(_rows())
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["accuracy", "loss"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["training", "validation"]
    assert [line.get_label() for line in fig.axes[1].lines] == legend
    assert np.allclose(fig.axes[1].lines[1].get_ydata(), 2.1)


def test_history_figure_shows_skipped_steps_when_a_step_was_skipped():
    fig = plots.history_figure(_rows(skipped=3.0))
    assert [ax.get_title() for ax in fig.axes] == ["accuracy", "loss", "skipped_steps"]
    assert list(fig.axes[2].lines[0].get_ydata()) == [0.0, 3.0, 0.0]


def test_curves_of_many_metrics_are_a_grid_of_at_most_four_columns(tmp_path):
    """11 panels (HDGE + JEM's terms): 3 rows of 4, not one row 3520 px wide."""
    names = [f"term{i}" for i in range(11)]
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,"
        + ",".join(names)
        + "\n"
        + "".join(f"{e}," + ",".join(["1.0"] * len(names)) + "\n" for e in range(3))
    )
    plots.plot_history(history, tmp_path / "curves.png")
    height, width, _ = plt.imread(tmp_path / "curves.png").shape
    assert (width, height) == (1280, 900)
    fig = plots.history_figure(list(csv.DictReader(history.open())))
    assert [ax.get_title() for ax in fig.axes] == names  # no empty 12th panel
    grid = [ax.get_subplotspec() for ax in fig.axes]
    assert [(s.rowspan.start, s.colspan.start) for s in grid] == [
        (r, c) for r in range(3) for c in range(4)
    ][:11]


def _hdge_train(workdir, *flags, epochs):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hdge_tf.bin.hdge_train",
            *smoke_flags(epochs=epochs),
            f"--workdir={workdir}",
            *flags,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout.splitlines()


@pytest.mark.slow
def test_hdge_train_console_is_quiet_by_default_and_verbose_on_request(tmp_path):
    """The smoke run for 2 epochs, then resumed for a third with --verbosity=1,
    each a real hdge-train process (TensorFlow's start-up notices are printed
    while it imports TensorFlow)."""
    run = tmp_path / "run"
    lines = _hdge_train(run, epochs=2)
    verbose = _hdge_train(run, "--verbosity=1", epochs=3)
    text = "\n".join(lines)
    assert not [line for line in lines if any(n in line for n in NOISE)], text
    assert "Saved checkpoint" not in text and "Test metrics:" not in text, text
    assert lines[0] == (
        "Training small_cnn on mnist5k (32 images held out for validation), 2 epochs "
        f"of batches of 32, on CPU ({os.cpu_count()} cores); run directory {run}"
    )
    epochs = [line for line in lines if EPOCH_LINE.match(line)]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("validation loss" in line for line in epochs), text
    assert lines[-3].startswith("Test (epoch ") and "accuracy" in lines[-3], text
    assert lines[-2].startswith("log p(x) OOD AUROC: "), text
    assert lines[-1] == (
        f"Wrote {run / 'metrics.json'}, {run / 'model.keras'}, {run / 'curves.png'}"
    )
    # Anything else is one of TensorFlow's C++ ERROR lines (BUILD.md: "Console").
    ours = {0, len(lines) - 3, len(lines) - 2, len(lines) - 1}
    others = [
        line for i, line in enumerate(lines) if i not in ours and line not in epochs
    ]
    assert all(re.match(r"E\d{4} ", line) for line in others), text

    text = "\n".join(verbose)
    assert "resuming after epoch 2" in text, text
    assert next(line for line in verbose if EPOCH_LINE.match(line)).startswith(
        "epoch 3/3: "
    )
    for shown in ("oneDNN", "Saved checkpoint", "functional_saver", "Test metrics:"):
        assert shown in text, (shown, text)
    assert len(verbose) > len(lines)
