"""The experiment config files a reproduction's variants name (DIRECTORY/NAME.py).

The library is handed the directory (hdge-reproduce passes the configs it ships),
so it never imports a config package itself; jobs get the files' paths on their
command lines and read them as `hdge-train` does.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import ml_collections


@dataclasses.dataclass(frozen=True)
class ExperimentConfigs:
    """Experiment config files by name: `file(name)` is DIRECTORY/NAME.py."""

    directory: Path

    def __post_init__(self):
        object.__setattr__(self, "directory", Path(self.directory))

    def file(self, name: str) -> Path:
        """DIRECTORY/NAME.py; a clear error for a name with no file."""
        path = self.directory / f"{name}.py"
        if not path.is_file():
            raise ValueError(f"No experiment config {name!r} ({path} does not exist).")
        return path

    def load(self, name: str) -> ml_collections.ConfigDict:
        """NAME.py's `get_config()`, read from the file as the jobs read it."""
        path = self.file(name)
        spec = importlib.util.spec_from_file_location(f"_experiment_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config()
