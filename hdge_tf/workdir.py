"""The names `hdge_tf.training` and tests/conftest.py import from here.

A run directory's paths are `hdge_tf.run_dir`, atomic writes
`hdge_tf.atomic_files`, history.csv repair `hdge_tf.history_repair`, reading a
run's config back `hdge_tf.run_config` and the resume check `hdge_tf.resume_check`;
import them from there.
"""

from hdge_tf.atomic_files import save_model_atomic, write_atomic
from hdge_tf.history_repair import repair_history
from hdge_tf.resume_check import check_resume
from hdge_tf.run_config import resolve_config
from hdge_tf.run_dir import RunDir, load_model

__all__ = [
    "RunDir",
    "check_resume",
    "load_model",
    "repair_history",
    "resolve_config",
    "save_model_atomic",
    "write_atomic",
]
