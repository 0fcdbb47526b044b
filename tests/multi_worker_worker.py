"""One worker of the two-process MultiWorkerMirroredStrategy test.

    python multi_worker_worker.py PORT0 PORT1 INDEX WORKDIR OUT.npz

Trains the smoke config with strategy="multi_worker" and saves the state this worker
ends with (backbone weights, queue, pointer) for the test to compare.
"""

import json
import os
import sys

import numpy as np


def main(port0: str, port1: str, index: str, workdir: str, out: str) -> None:
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{port0}", f"127.0.0.1:{port1}"]},
            "task": {"type": "worker", "index": int(index)},
        }
    )
    from conftest import smoke_config

    from hdge_tf import training

    config = smoke_config(epochs=2)
    config.train.select = "last"  # the kept model is the one whose steps count
    config.strategy = "multi_worker"
    config.eval.ood_sets = ()
    model, metrics = training.train_model(config, workdir)
    queue = model.queue
    np.savez(
        out,
        queue=queue.logits.numpy(),
        pointer=queue.pointer.numpy(),
        iterations=model.optimizer.iterations.numpy(),
        loss=metrics["test_loss"],
        **{f"w{i}": w for i, w in enumerate(model.backbone.get_weights())},
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
