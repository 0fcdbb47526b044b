"""history.csv repaired to the rows of the checkpointed epochs."""

import pytest

from hdge_tf.history_repair import repair_history

_HEADER = "epoch,accuracy,loss\r\n"


@pytest.mark.parametrize(
    ("text", "kept", "damaged"),
    [
        # Two trainers on one workdir: interleaved headers, an epoch twice.
        (
            _HEADER + _HEADER + "0,0.1,2.0\r\n0,0.2,1.9\r\n1,0.3,1.8\r\n",
            ["0,0.2,1.9", "1,0.3,1.8"],
            True,
        ),
        # A row cut off by a kill mid-write, with no newline after it.
        (_HEADER + "0,0.1,2.0\r\n1,0.3,1.8\r\n2,0.", ["0,0.1,2.0", "1,0.3,1.8"], True),
        # Rows of epochs past the checkpoint: dropped without a warning.
        (
            _HEADER + "0,0.1,2.0\r\n1,0.3,1.8\r\n2,0.4,1.7\r\n3,0.5,1.6\r\n",
            ["0,0.1,2.0", "1,0.3,1.8"],
            False,
        ),
    ],
)
def test_repair_history_keeps_the_checkpointed_rows(
    tmp_path, caplog, text, kept, damaged
):
    path = tmp_path / "history.csv"
    path.write_bytes(text.encode())
    repair_history(path, epochs=2)
    # CSVLogger's line ends, so its next row lands on a line of its own.
    assert path.read_bytes().decode() == _HEADER + "".join(f"{r}\r\n" for r in kept)
    assert ("damaged line" in caplog.text) == damaged


def test_repair_history_removes_a_file_without_a_header(tmp_path, caplog):
    path = tmp_path / "history.csv"
    path.write_text("0,0.1,2.0\n1,0.2,1.9\n")
    repair_history(path, epochs=2)
    assert not path.exists()
    assert "has no header row (damaged); starting it again from epoch 3" in caplog.text
