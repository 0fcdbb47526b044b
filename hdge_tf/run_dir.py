"""A run directory: where each output of a run lives, and reading its model back.

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

`RunDir` names these paths; `run_paths` resolves the programs' `--workdir` /
`--model` flags and `load_model` reads a model file back. The run's config is read
back by `hdge_tf.run_config`, compared with a new one by `hdge_tf.resume_check`;
outputs are replaced with `hdge_tf.atomic_files` and history.csv repaired with
`hdge_tf.history_repair`.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import keras


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


def run_paths(
    workdir: str | Path | None, model: str | Path | None
) -> tuple[RunDir, Path]:
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
