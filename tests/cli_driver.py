"""Runs one hdge-* program on several command lines in one process, for
test_cli.py: TensorFlow is imported once per program instead of once per case.

    python cli_driver.py MODULE CASES.json OUT_DIR

MODULE is a module of hdge_tf.bin (e.g. hdge_train); CASES.json maps case names to
argument lists. Each case runs the program's own `run()` with sys.argv set, as its
console script would; OUT_DIR/NAME.stderr receives what it wrote to stderr (file
descriptor 2, so TensorFlow's C++ logs too) and OUT_DIR/NAME.status its exit status.
"""

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

from absl import flags


def _run(module, args: list[str]) -> int:
    # config_flags defines a flag per --config.* override it parses: drop those of
    # the previous case, and every value it parsed.
    for name in list(flags.FLAGS):
        if name.startswith("config."):
            delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
    # config_flags loads a config file as module "<flag>_config" with
    # load_module(), which runs a new file in the old module's namespace: drop it,
    # or a file without get_config() would find the previous case's.
    for name in [n for n in sys.modules if n.endswith("_config")]:
        if name.split("_config")[0] in flags.FLAGS:
            del sys.modules[name]
    sys.argv = [module.__name__, *args]
    try:
        module.run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(bool(exit_.code))
    except Exception:  # as the interpreter reports an uncaught exception
        traceback.print_exc()
        return 1
    return 0


def main(module_name: str, cases_file: str, out_dir: str) -> None:
    module = importlib.import_module(f"hdge_tf.bin.{module_name}")
    out = Path(out_dir)
    for name, args in json.loads(Path(cases_file).read_text()).items():
        with open(out / f"{name}.stderr", "w") as stderr:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(stderr.fileno(), 2)
            try:
                status = _run(module, args)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
        (out / f"{name}.status").write_text(str(status))


if __name__ == "__main__":
    main(*sys.argv[1:])
