"""Runs hdge-* programs on several command lines in one process, for
tests/programs.py: TensorFlow is imported once instead of once per command line.

    python cli_driver.py CASES.json OUT_DIR

CASES.json is a list of {"name", "program", "args"}: "program" a module of
hdge_tf.bin (e.g. hdge_train), "args" its argument list. Each case runs the
program's module anew (its flags defined again) and then its `run()` with
sys.argv set, as its console script would; OUT_DIR/NAME.stdout and NAME.stderr
receive what it wrote (file descriptors 1 and 2, so TensorFlow's C++ logs too),
NAME.status its exit status, NAME.time.json when it started and how long it took.
"""

import contextlib
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

# First, as in a program: hdge_tf chooses TensorFlow's CPU kernels before it loads.
import hdge_tf  # noqa: F401

# isort: split
import keras
from absl import flags, logging


def _load(program: str, args: list[str], absl_flags: set[str]):
    """The program's module, as a new process on `args` would have it: every flag
    defined since absl's own (`absl_flags`) is removed, the previous program's and
    its config's `--config.*` overrides, and the module is run again with
    sys.argv set to define its flags anew (the programs define flags of the same
    names; config_flags reads sys.argv when it defines a config flag with a
    default file, for the overrides of that file's fields)."""
    sys.argv = [f"hdge_tf.bin.{program}", *args]
    defined = set(flags.FLAGS) - absl_flags
    for name in defined:
        delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()  # absl's own, e.g. --verbosity
    # config_flags loads a config file as module "<flag>_config" with
    # load_module(), which runs a new file in the old module's namespace: drop it,
    # or a file without get_config() would find the previous case's.
    for name in defined:
        sys.modules.pop(f"{name}_config", None)
    name = f"hdge_tf.bin.{program}"
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


def _run(module) -> int:
    logging.set_verbosity(logging.INFO)  # absl's default in a new process
    keras.utils.clear_session()
    try:
        module.run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(bool(exit_.code))
    except Exception:  # as the interpreter reports an uncaught exception
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def _file_descriptor_to(fd: int, path: Path):
    stream = {1: sys.stdout, 2: sys.stderr}[fd]
    with open(path, "w") as target:
        stream.flush()
        saved = os.dup(fd)
        os.dup2(target.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)


def main(cases_file: str, out_dir: str) -> None:
    out = Path(out_dir)
    absl_flags = set(flags.FLAGS)
    for case in json.loads(Path(cases_file).read_text()):
        name = case["name"]
        started = time.time()
        with (
            _file_descriptor_to(1, out / f"{name}.stdout"),
            _file_descriptor_to(2, out / f"{name}.stderr"),
        ):
            status = _run(_load(case["program"], case["args"], absl_flags))
        (out / f"{name}.status").write_text(str(status))
        times = {"started": started, "seconds": time.time() - started}
        (out / f"{name}.time.json").write_text(json.dumps(times))


if __name__ == "__main__":
    main(*sys.argv[1:])
