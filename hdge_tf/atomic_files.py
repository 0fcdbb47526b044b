"""Files replaced in one step: a process killed mid-write leaves the previous
version, never half a file.

A temporary file in the same directory, then `os.replace` (a rename on one
filesystem): config.json, metrics.json, a repaired history.csv and model.keras are
written this way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import keras


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
