"""Throughput and memory benchmark of HDGE training, evaluation and PGD.

    config.py   what a configuration is (mode, precision, network, ...), the grid,
                and the trainer's model it builds (`training.build_model`)
    timing.py   one measurement: timed train steps, scoring and PGD, trace counts,
                epoch timers, peak RSS
    epochs.py   whole epochs of a trainer config passed in: hdge-train's epoch
                against step time x steps, `fit` with tf.data autotuning on/off
    suite.py    running it all, each configuration in a fresh process
    targets.py  the issue's targets and the ratios checked against them
    report.py   markdown tables and the JSON file

Each configuration builds the trainer's model under its Keras precision policy,
compiles Adam and times the model's own train function (the one `fit` runs) on a
fixed batch of uniform [-1, 1] noise: `warmup` steps (tracing included), then
`repeats` steps, each synced by fetching the loss. Reported: median step time,
images/s and how often the step was traced (1 = no retracing). Peak RSS is
`ru_maxrss` of a fresh process per configuration (`isolate=True`), read after the
model is built and again after the timed steps.

    hdge-bench --output=bench.json      # the default table, see bin/hdge_bench.py
"""

from hdge_tf.bench.config import (
    MODES,
    NETWORKS,
    PRECISIONS,
    BenchConfig,
    TimingOptions,
    build_model,
    configurations,
    parse_network,
)
from hdge_tf.bench.epochs import autotune_fit, epoch_overhead
from hdge_tf.bench.report import format_report, write_report
from hdge_tf.bench.suite import (
    environment,
    run_benchmark,
    run_configuration,
    run_isolated,
    run_job,
)
from hdge_tf.bench.targets import checks
from hdge_tf.bench.timing import (
    EpochTimer,
    TraceCounter,
    peak_rss_mb,
    random_batch,
    time_evaluation,
    time_pgd,
    time_train_steps,
)

__all__ = [
    "MODES",
    "NETWORKS",
    "PRECISIONS",
    "BenchConfig",
    "EpochTimer",
    "TimingOptions",
    "TraceCounter",
    "autotune_fit",
    "build_model",
    "checks",
    "configurations",
    "environment",
    "epoch_overhead",
    "format_report",
    "parse_network",
    "peak_rss_mb",
    "random_batch",
    "run_benchmark",
    "run_configuration",
    "run_isolated",
    "run_job",
    "time_evaluation",
    "time_pgd",
    "time_train_steps",
    "write_report",
]
