"""Atomic writes leave the old file when they fail."""

from pathlib import Path

import pytest
from conftest import tiny_backbone

from hdge_tf.atomic_files import save_model_atomic, write_atomic


def test_atomic_writes_leave_the_old_file_when_they_fail(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_atomic(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'

    model = tiny_backbone()
    save_model_atomic(model, tmp_path / "model.keras")
    before = (tmp_path / "model.keras").read_bytes()

    def disk_full(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(model), "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_model_atomic(model, tmp_path / "model.keras")
    assert (tmp_path / "model.keras").read_bytes() == before
    # No temporary file is left behind either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.keras"]
