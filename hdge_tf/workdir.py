"""A run directory: where each output of a run lives, and reading a run back.

`hdge-train` writes, and the other programs read and add to, one directory per run:

    config.json          the resolved config of the latest `train` call
    model.keras          the kept model (train.select; HDGEClassifier, queue included)
    metrics.json         test metrics of the kept model and of the last epoch
    history.csv          per-epoch metrics, appended across resumes
    curves.png           those metrics plotted
    checkpoints/         tf.train checkpoints (model incl. queue and replay buffer,
                         optimizer, epoch, restarts, best validation accuracy)
    checkpoints/best/    the model of the best validation epoch
    tensorboard/         TensorBoard logs
    samples/             SGLD sample grids (the trainer's every
                         train.sample_every_epochs epochs, and hdge-sample's)
    eval/                hdge-eval's report
    export/saved_model/  hdge-export's SavedModel
    .lock                the PID and host of the trainer using it (`run_lock`)

`RunDir` names these paths; `load_model` and `load_run_config` read a run back, and
`check_resume` compares a new config with the one a run was trained with.

config.json, metrics.json, history.csv (when repaired) and model.keras are replaced
atomically (`write_atomic`, `save_model_atomic`: a temporary file in the same
directory, then `os.replace`), so a process killed mid-write leaves the previous
version, never half a file. `repair_history` makes a damaged history.csv (interleaved
headers, a cut-off row) consistent with the checkpoint a run resumes from.

Resuming with another config: keys whose change would alter what the checkpoint
holds or what the model is for (`RESUME_BLOCKING_KEYS`: the network, the logit
queue's size, the replay buffer's, whether there is a replay buffer, the optimizer
and its loss scale, the dataset) are an error; every other difference (more epochs,
another learning rate, loss weight, divergence threshold or evaluation setting) is
logged as a warning and applies from the resumed epoch on.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import keras
import ml_collections
from absl import logging

# Dotted config keys (and key prefixes) a resumed run must keep: see the docstring.
RESUME_BLOCKING_KEYS = (
    "backbone",
    "data.name",
    "loss.queue_size",
    "loss.replay_buffer_size",
    "loss.px_sgld_weight",
    "loss.pxy_sgld_weight",
    "train.optimizer",
    "precision",
)

# Sections of a run's config.json merged into the defaults (`resolve_config`).
MERGED_SECTIONS = ("data", "eval")


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The paths of a run directory (see the module docstring)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def model_file(self) -> Path:
        return self.path / "model.keras"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def history_file(self) -> Path:
        return self.path / "history.csv"

    @property
    def curves_file(self) -> Path:
        return self.path / "curves.png"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint_dir(self) -> Path:
        return self.checkpoint_dir / "best"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def saved_model_dir(self) -> Path:
        return self.path / "export" / "saved_model"

    def create(self) -> None:
        """Makes the directory (and its parents) unless it exists."""
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(
                f"The workdir {self.path} is a file; pass a directory (new or a "
                "run's) as the workdir."
            )
        self.path.mkdir(parents=True, exist_ok=True)

    def has_checkpoint(self) -> bool:
        """Whether the run has a checkpoint to resume from."""
        return (self.checkpoint_dir / "checkpoint").is_file()

    def read_config(self) -> dict | None:
        """The run's config.json as a dict, or None when it has none."""
        if not self.config_file.is_file():
            return None
        try:
            return json.loads(self.config_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.config_file} is not valid JSON: {err}") from err


@contextlib.contextmanager
def _temporary_beside(path: Path, suffix: str = ""):
    """A fresh path in `path`'s directory (so `os.replace` is a rename on one
    filesystem), removed unless the block moved it into place."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_atomic(path: str | Path, text: str) -> None:
    """Replaces `path` with `text` in one step: readers see the old or the new file."""
    path = Path(path)
    with _temporary_beside(path) as temporary:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)


def save_model_atomic(model: keras.Model, path: str | Path) -> None:
    """`model.save(path)` that never leaves a half-written archive at `path`."""
    path = Path(path)
    # Keras infers the format from the suffix, so the temporary keeps it.
    with _temporary_beside(path, suffix=path.suffix) as temporary:
        model.save(temporary)
        os.replace(temporary, path)


def repair_history(path: str | Path, epochs: int) -> None:
    """Keeps the rows of history.csv for epochs < `epochs` (0-based, as CSVLogger
    writes them) that match its header, dropping those a resumed run will replay
    and any damage (a second header, a cut-off row, text that is not a row, an
    epoch written twice, of which the later row is kept); a file
    without a readable header is removed, and CSVLogger starts a new one. Each
    change is logged as a warning, except dropping rows past the checkpoint."""
    path = Path(path)
    if not path.exists():
        return
    text = path.read_text(errors="replace")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0] if rows else []
    if not header or header[0] != "epoch":
        logging.warning(
            "%s has no header row (damaged); starting it again from epoch %d.",
            path,
            epochs + 1,
        )
        path.unlink()
        return
    by_epoch, damaged = {}, 0
    for row in rows[1:]:
        epoch = _int_or_none(row[0]) if len(row) == len(header) else None
        if epoch is None or epoch in by_epoch:
            damaged += 1
        if epoch is not None and epoch < epochs:
            by_epoch[epoch] = row  # of an epoch written twice, the later row
    kept = [header] + [by_epoch[e] for e in sorted(by_epoch)]
    if damaged:
        logging.warning(
            "%s had %d damaged line(s) (a second header, a cut-off or malformed "
            "row, an epoch twice); dropped them, keeping %d epoch row(s).",
            path,
            damaged,
            len(kept) - 1,
        )
    # A cut-off last line would also glue CSVLogger's next row onto itself.
    if len(kept) < len(rows) or not text.endswith("\n"):
        out = io.StringIO()
        csv.writer(out).writerows(kept)  # CSVLogger's dialect, csv.excel
        write_atomic(path, out.getvalue())


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def run_paths(workdir: str | Path | None, model: str | Path | None):
    """(RunDir, model file) of the `--workdir` / `--model` flags of our programs:
    the model defaults to RUN/model.keras, the run directory to the model file's
    directory."""
    if not workdir and not model:
        raise ValueError("Pass --workdir=RUN or --model=path.keras.")
    run = RunDir(workdir or Path(model).parent)
    return run, Path(model) if model else run.model_file


def load_model(path: str | Path) -> keras.Model:
    """Loads a `.keras` file written by the trainer (or any Keras classifier).

    The optimizer is not restored (compile=False): evaluation does not need it, and
    its learning-rate schedule class would have to be imported to deserialize it.
    Legacy `.h5` files are passed to Keras as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file {path}: train the run first, or pass --model=FILE."
        )
    # Keras calls anything it cannot open "File not found"; say what it is instead.
    if path.suffix != ".h5" and not (
        path.suffix == ".keras" and zipfile.is_zipfile(path)
    ):
        raise ValueError(
            f"{path} is not a .keras model archive (the zip file Model.save "
            "writes, e.g. a run's model.keras)."
        )
    return keras.saving.load_model(path, compile=False)


def _tuples(value):
    """JSON lists back to the tuples the ConfigDict fields are typed with."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def resolve_config(
    defaults: ml_collections.ConfigDict,
    run_config: dict | None,
    overrides: dict[str, object] | None = None,
) -> ml_collections.ConfigDict:
    """defaults <- the run's config.json dict <- {dotted.name: value} overrides.

    The run's `data` and `eval` sections are merged into the defaults, so fields the
    run lacks (it may predate an eval option) keep them, except
    `data.validation_size`, which is 0 for a run that predates it; other sections
    (backbone, loss, ...) are the run's as they are.
    """
    config = defaults.copy_and_resolve_references()
    config.unlock()
    run_data = (run_config or {}).get("data")
    if run_data is not None and "validation_size" not in run_data:
        # A run from before the hold-out trained on every image: none of them is
        # held out, whatever today's default.
        config.data.validation_size = 0
    for key, value in _tuples(run_config or {}).items():
        if key in MERGED_SECTIONS and key in config:
            config[key].update(value)
        else:
            config[key] = value
    for name, value in (overrides or {}).items():
        *parents, leaf = name.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def load_run_config(
    run: RunDir,
    defaults: ml_collections.ConfigDict,
    overrides: dict[str, object] | None = None,
) -> ml_collections.ConfigDict:
    """`resolve_config` of the run's config.json (the defaults alone, with a
    warning, when the run has none)."""
    run_config = run.read_config()
    if run_config is None:
        logging.warning("No %s: using the default config.", run.config_file)
    return resolve_config(defaults, run_config, overrides)


def _flatten(value: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


_ABSENT = object()


def config_changes(previous: dict, config) -> dict[str, tuple]:
    """{dotted key: (previous value, new value)} of every leaf where `config` (a
    ConfigDict) differs from `previous` (a run's config.json dict); a key missing on
    one side has the value `_ABSENT` there."""
    old = _flatten(previous)
    new = _flatten(json.loads(config.to_json_best_effort()))
    return {
        key: (old.get(key, _ABSENT), new.get(key, _ABSENT))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    }


def _blocks_resume(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RESUME_BLOCKING_KEYS)


def _describe(changes: dict[str, tuple]) -> str:
    def show(value) -> str:
        return "(absent)" if value is _ABSENT else json.dumps(value)

    return ", ".join(f"{k} {show(a)} -> {show(b)}" for k, (a, b) in changes.items())


def check_resume(run: RunDir, config) -> None:
    """Before resuming `run` with `config`: raises ValueError naming the keys that
    differ from its config.json and would change the model (`RESUME_BLOCKING_KEYS`),
    and logs a warning naming the other keys that differ. Does nothing for a run
    without a checkpoint (nothing to resume) or without config.json."""
    previous = run.read_config() if run.has_checkpoint() else None
    if previous is None:
        return
    changes = config_changes(previous, config)
    blocking = {k: v for k, v in changes.items() if _blocks_resume(k)}
    if blocking:
        raise ValueError(
            f"Cannot resume {run.path}: the config differs from its config.json in "
            f"keys that change the model: {_describe(blocking)}. Pass the run's "
            "values, or use a new workdir."
        )
    if changes:
        logging.warning(
            "Resuming %s with config values that differ from its config.json: %s.",
            run.path,
            _describe(changes),
        )
