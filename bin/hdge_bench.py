"""Times HDGE training steps, evaluation and PGD; checks the issue's targets.

The default table (WRN-16-4, 32x32x3, 10 classes, batch 64, K = 65,536; CE, HDGE and
HDGE + JEM with 20 SGLD steps; float32 and mixed_bfloat16; each configuration in its
own process; the mnist5k epoch check):

    hdge-bench --output=bench.json

The paper's settings and the contrastive-memory target:

    hdge-bench --network=wrn-28-10 --output=bench_wrn28.json
    hdge-bench --classes=100 --batch_sizes=64,256 --output=bench_c100.json

XLA on and off (--jit_compile: auto, true or false; auto is on with a GPU):

    hdge-bench --jit_compile=true --noepoch --noautotune --output=bench_xla.json
    hdge-bench --jit_compile=false --noepoch --noautotune --output=bench_noxla.json

A quick look (booleans are absl's: --noeval, --nopgd, --noepoch, --noautotune,
--noisolate):

    hdge-bench --modes=ce,hdge --precisions=float32 --warmup=2 --repeats=3 \
        --noeval --nopgd --noepoch --noautotune

The epoch check and the autotuning comparison train the mnist5k demo
(configs/mnist5k_hdge.py). Prints markdown tables and writes everything measured to
--output (JSON); see hdge_tf.bench. Run it on an otherwise idle machine: the numbers
are wall times.
"""

from absl import app, flags

from hdge_tf import bench
from hdge_tf.bin import cli
from hdge_tf.configs import mnist5k_hdge

_NETWORK = flags.DEFINE_string(
    "network", "wrn-16-4", "wrn-DEPTH-WIDTH (wrn-16-4, wrn-28-10) or small_cnn."
)
_CLASSES = flags.DEFINE_integer("classes", 10, "Number of classes (100: CIFAR-100).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Input height and width.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "Input channels.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64"], "Training batch sizes.")
_QUEUE_SIZE = flags.DEFINE_integer("queue_size", 65536, "K of the HDGE logit queue.")
_MODES = flags.DEFINE_list("modes", list(bench.MODES), "Of ce, hdge, jem.")
_PRECISIONS = flags.DEFINE_list(
    "precisions", list(bench.PRECISIONS), "Keras dtype policies."
)
_SGLD_STEPS = flags.DEFINE_integer("sgld_steps", 20, "SGLD steps per jem step.")
_JIT_COMPILE = flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "true", "false"],
    "XLA-compiled training steps (train.jit_compile); auto: on with a GPU.",
)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing).")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed steps; the median is reported.")
_EVAL = flags.DEFINE_boolean("eval", True, "Time logits + log p(x) scoring.")
_EVAL_IMAGES = flags.DEFINE_integer("eval_images", 1024, "Images scored per call.")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 256, "Scoring batch.")
_EVAL_REPEATS = flags.DEFINE_integer(
    "eval_repeats", 3, "Timed calls of scoring and PGD."
)
_PGD = flags.DEFINE_boolean("pgd", True, "Time PGD iterations.")
_PGD_STEPS = flags.DEFINE_integer("pgd_steps", 5, "PGD iterations per timed call.")
_EPOCH = flags.DEFINE_boolean(
    "epoch", True, "Compare a mnist5k fit epoch with step time x steps."
)
_AUTOTUNE = flags.DEFINE_boolean(
    "autotune", True, "Time a mnist5k fit with tf.data autotuning on and off."
)
_ISOLATE = flags.DEFINE_boolean(
    "isolate", True, "Each configuration in a fresh process (needed for peak RSS)."
)
_OUTPUT = flags.DEFINE_string("output", "bench.json", "Where the JSON report goes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_MODES.value) - set(bench.MODES))
    if unknown:
        raise app.UsageError(f"Unknown modes {unknown}; use {bench.MODES}.")
    try:
        bench.parse_network(_NETWORK.value)
        options = bench.TimingOptions(
            warmup=_WARMUP.value,
            repeats=_REPEATS.value,
            eval_images=_EVAL_IMAGES.value,
            eval_batch_size=_EVAL_BATCH_SIZE.value,
            eval_repeats=_EVAL_REPEATS.value,
            pgd_steps=_PGD_STEPS.value,
        )
    except ValueError as err:
        raise app.UsageError(str(err)) from err
    configs = bench.configurations(
        modes=_MODES.value,
        precisions=_PRECISIONS.value,
        batch_sizes=[int(b) for b in _BATCH_SIZES.value],
        network=_NETWORK.value,
        num_classes=_CLASSES.value,
        image_shape=(_IMAGE_SIZE.value, _IMAGE_SIZE.value, _CHANNELS.value),
        queue_size=_QUEUE_SIZE.value,
        sgld_steps=_SGLD_STEPS.value,
        jit_compile=_JIT_COMPILE.value,
    )
    report = bench.run_benchmark(
        configs,
        options,
        evaluate=_EVAL.value,
        pgd=_PGD.value,
        epoch=_EPOCH.value,
        isolate=_ISOLATE.value,
        autotune=_AUTOTUNE.value,
        fit_config=mnist5k_hdge.get_config(),
    )
    bench.write_report(report, _OUTPUT.value)
    print(bench.format_report(report))
    print(f"\nWrote {_OUTPUT.value}")


def run():
    cli.run(main, "hdge-bench")


if __name__ == "__main__":
    run()
