"""history.csv made consistent with the checkpoint a run resumes from.

CSVLogger appends a row per epoch; a resumed run replays the epochs after its
checkpoint, and a killed or concurrent trainer can leave interleaved headers or a
cut-off row. `repair_history` keeps one row per checkpointed epoch.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from absl import logging

from hdge_tf.atomic_files import write_atomic


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
