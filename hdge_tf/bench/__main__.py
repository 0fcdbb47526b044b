"""The child process of `suite.run_isolated`: python -m hdge_tf.bench JOB_FILE OUT.

Runs the pickled job in JOB_FILE (see `suite.run_job`; written by the parent, in
its own temporary directory) and writes its result to OUT as JSON.
"""

import json
import pickle
import sys
from pathlib import Path

from hdge_tf.bench.suite import run_job


def main(argv: list[str]) -> None:
    job, out = pickle.loads(Path(argv[1]).read_bytes()), Path(argv[2])
    out.write_text(json.dumps(run_job(job)))


if __name__ == "__main__":
    main(sys.argv)
