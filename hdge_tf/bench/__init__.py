"""Throughput and memory benchmark of HDGE training, evaluation and PGD.

    config.py   what a configuration is (mode, precision, network, ...), the grid,
                and the trainer's model it builds (`training.build_model`)
    timing.py   one measurement: timed train steps, the SGLD chain alone, scoring
                and PGD, trace counts, epoch timers, peak RSS
    flops.py    multiply-adds counted from the model's layers, a step's FLOPs per
                mode, and the host's matmul GFLOP/s to read its rate against
    yardstick.py  the PyTorch yardstick (an outside script with its own Python),
                run beside a float32 Wide ResNet configuration
    epochs.py   whole epochs of a trainer config passed in: hdge-train's epoch
                against step time x steps, `fit` with tf.data autotuning on/off,
                whole recipes' epochs side by side (HDGE + JEM against HDGE)
    suite.py    running it all, each configuration in a fresh process, in one or
                more interleaved rounds
    targets.py  the performance targets and the ratios checked against them
    report.py   markdown tables and the JSON file

Each configuration builds the trainer's model under its Keras precision policy,
compiles Adam and times the model's own train function (the one `fit` runs) on a
fixed batch of uniform [-1, 1] noise: `warmup` steps (tracing included), then
`repeats` steps, each synced by fetching the loss. Reported: median step time,
images/s and how often the step was traced (1 = no retracing). Peak RSS is
`ru_maxrss` of a fresh process per configuration (`isolate=True`), read after the
model is built and again after the timed steps. The step's GFLOP/s (its FLOPs
counted from the layers, over the median step) is read against a matmul's
GFLOP/s measured in the same process right after; jem's SGLD chain is also timed
alone. A PyTorch yardstick, when given, runs right before each float32 Wide ResNet
configuration, in `rounds` interleaved rounds.

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
from hdge_tf.bench.epochs import (
    array_fit,
    autotune_fit,
    epoch_overhead,
    recipe_epochs,
)
from hdge_tf.bench.flops import (
    ForwardCost,
    forward_multiply_adds,
    matmul_gflops,
    sgld_chain_flops,
    step_flops,
    training_pass_flops,
)
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
    time_sgld_chain,
    time_train_steps,
)
from hdge_tf.bench.yardstick import TorchYardstick

__all__ = [
    "MODES",
    "NETWORKS",
    "PRECISIONS",
    "BenchConfig",
    "EpochTimer",
    "ForwardCost",
    "TimingOptions",
    "TorchYardstick",
    "TraceCounter",
    "array_fit",
    "autotune_fit",
    "build_model",
    "checks",
    "configurations",
    "environment",
    "epoch_overhead",
    "format_report",
    "forward_multiply_adds",
    "matmul_gflops",
    "parse_network",
    "peak_rss_mb",
    "random_batch",
    "recipe_epochs",
    "run_benchmark",
    "run_configuration",
    "run_isolated",
    "run_job",
    "sgld_chain_flops",
    "step_flops",
    "time_evaluation",
    "time_pgd",
    "time_sgld_chain",
    "time_train_steps",
    "training_pass_flops",
    "write_report",
]
