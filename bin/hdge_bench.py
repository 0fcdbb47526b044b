"""Times HDGE training steps, evaluation and PGD; checks the performance targets.

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

Beside PyTorch: a yardstick script run by a Python with torch (a scratch
venv, never our dependency) times the same float32 Wide ResNet's CE step (and, for
jem, its SGLD chain) right before each of our float32 WRN configurations;
--rounds=N runs the whole list N times, interleaved, and each check reports its
mean over the rounds with the min-max range:

    hdge-bench --modes=ce,jem --precisions=float32 --noeval --nopgd --noepoch \
        --noautotune --torch_python=VENV/bin/python --rounds=3

The yardstick is hdge_tf/bench/torch_wrn_step.py (shipped with the package, run
only by that Python; --torch_yardstick picks another script).

Every configuration also reports its GFLOP/s (FLOPs counted from the layers,
hdge_tf.bench.flops) against a square matmul's measured in its own process
(--matmul_size), and a jem configuration its SGLD chain timed alone
(--sgld_repeats calls).

The epoch check and the autotuning comparison train the mnist5k demo
(configs/mnist5k_hdge.py). Prints markdown tables and writes everything measured to
--output (JSON); see hdge_tf.bench. Run it on an otherwise idle machine: the numbers
are wall times.
"""

from pathlib import Path

from absl import app, flags

from hdge_tf import bench, configs
from hdge_tf.bin import arguments, cli
from hdge_tf.configs import base, mnist5k_hdge
from hdge_tf.reproduce.experiments import ExperimentConfigs

# This program's flags (absl's own are added when it parses, bin/cli.py).
FLAGS = flags.FlagValues()
_NETWORK = flags.DEFINE_string(
    "network",
    "wrn-16-4",
    "wrn-DEPTH-WIDTH (wrn-16-4, wrn-28-10) or small_cnn.",
    flag_values=FLAGS,
)
_CLASSES = flags.DEFINE_integer(
    "classes",
    10,
    "Number of classes (100: CIFAR-100).",
    lower_bound=2,
    flag_values=FLAGS,
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size",
    32,
    "Input height and width.",
    lower_bound=1,
    flag_values=FLAGS,
)
_CHANNELS = flags.DEFINE_integer(
    "channels", 3, "Input channels.", lower_bound=1, flag_values=FLAGS
)
_BATCH_SIZES = flags.DEFINE_list(
    "batch_sizes", ["64"], "Training batch sizes.", flag_values=FLAGS
)
_QUEUE_SIZE = flags.DEFINE_integer(
    "queue_size",
    65536,
    "K of the HDGE logit queue.",
    lower_bound=1,
    flag_values=FLAGS,
)
_MODES = flags.DEFINE_list(
    "modes", list(bench.MODES), "Of ce, hdge, jem.", flag_values=FLAGS
)
_PRECISIONS = flags.DEFINE_list(
    "precisions",
    list(bench.PRECISIONS),
    "Keras dtype policies.",
    flag_values=FLAGS,
)
_SGLD_STEPS = flags.DEFINE_integer(
    "sgld_steps",
    20,
    "SGLD steps per jem step.",
    lower_bound=0,
    flag_values=FLAGS,
)
_JIT_COMPILE = flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "true", "false"],
    "XLA-compiled training steps (train.jit_compile); auto: on with a GPU.",
    flag_values=FLAGS,
)
_WARMUP = flags.DEFINE_integer(
    "warmup",
    3,
    "Untimed steps first (tracing).",
    lower_bound=1,
    flag_values=FLAGS,
)
_REPEATS = flags.DEFINE_integer(
    "repeats",
    10,
    "Timed steps; the median is reported.",
    lower_bound=1,
    flag_values=FLAGS,
)
_EVAL = flags.DEFINE_boolean(
    "eval", True, "Time logits + log p(x) scoring.", flag_values=FLAGS
)
_EVAL_IMAGES = flags.DEFINE_integer(
    "eval_images",
    1024,
    "Images scored per call.",
    lower_bound=0,
    flag_values=FLAGS,
)
_EVAL_BATCH_SIZE = flags.DEFINE_integer(
    "eval_batch_size",
    256,
    "Scoring batch.",
    lower_bound=1,
    flag_values=FLAGS,
)
_EVAL_REPEATS = flags.DEFINE_integer(
    "eval_repeats",
    3,
    "Timed calls of scoring and PGD.",
    lower_bound=1,
    flag_values=FLAGS,
)
_PGD = flags.DEFINE_boolean("pgd", True, "Time PGD iterations.", flag_values=FLAGS)
_PGD_STEPS = flags.DEFINE_integer(
    "pgd_steps",
    5,
    "PGD iterations per timed call.",
    lower_bound=0,
    flag_values=FLAGS,
)
_EPOCH = flags.DEFINE_boolean(
    "epoch",
    True,
    "Compare a mnist5k fit epoch with step time x steps.",
    flag_values=FLAGS,
)
_AUTOTUNE = flags.DEFINE_boolean(
    "autotune",
    True,
    "Time a mnist5k fit with tf.data autotuning on and off.",
    flag_values=FLAGS,
)
_RECIPES = flags.DEFINE_list(
    "recipes",
    ["mnist5k_hdge", "mnist5k_hdge_jem"],
    "Experiment configs (configs/NAME.py) whose training epochs are timed side "
    "by side, each against the first; empty: none.",
    flag_values=FLAGS,
)
_RECIPE_EPOCHS = flags.DEFINE_integer(
    "recipe_epochs",
    3,
    "Epochs per recipe and round (the first one traces).",
    lower_bound=1,
    flag_values=FLAGS,
)
_SGLD_REPEATS = flags.DEFINE_integer(
    "sgld_repeats",
    3,
    "Timed calls of a jem configuration's SGLD chain alone.",
    lower_bound=1,
    flag_values=FLAGS,
)
_MATMUL_SIZE = flags.DEFINE_integer(
    "matmul_size",
    2048,
    "Side of the square matmul the GFLOP/s are read against.",
    lower_bound=1,
    flag_values=FLAGS,
)
_TORCH_PYTHON = arguments.DEFINE_path(
    "torch_python",
    None,
    "A Python with torch for the yardstick; unset: no yardstick.",
    flag_values=FLAGS,
)
_TORCH_YARDSTICK = arguments.DEFINE_path(
    "torch_yardstick",
    str(Path(bench.__file__).with_name("torch_wrn_step.py")),
    "The PyTorch yardstick script run by --torch_python.",
    flag_values=FLAGS,
)
_ROUNDS = flags.DEFINE_integer(
    "rounds",
    1,
    "Runs of the whole list of configurations, interleaved.",
    lower_bound=1,
    flag_values=FLAGS,
)
_ISOLATE = flags.DEFINE_boolean(
    "isolate",
    True,
    "Each configuration in a fresh process (needed for peak RSS).",
    flag_values=FLAGS,
)
_OUTPUT = arguments.DEFINE_path(
    "output", "bench.json", "Where the JSON report goes.", flag_values=FLAGS
)


# Dtype policies a benchmark step runs under (Keras accepts more, e.g. float64, that
# our steps do not support).
_SUPPORTED_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _check_list_flags() -> None:
    """Each list flag's values before anything runs: one line naming the flag."""
    for holder, allowed in (
        (_MODES, bench.MODES),
        (_PRECISIONS, _SUPPORTED_PRECISIONS),
    ):
        unknown = [v for v in holder.value if v not in allowed]
        if unknown or not holder.value:
            raise app.UsageError(
                f"--{holder.name}={','.join(holder.value)}: "
                f"{'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
                f"allowed values: {', '.join(allowed)} (comma-separated)."
            )
    if not all(b.isdigit() and int(b) > 0 for b in _BATCH_SIZES.value):
        raise app.UsageError(
            f"--batch_sizes={','.join(_BATCH_SIZES.value)}: expected positive "
            "integers, comma-separated (e.g. 64,256)."
        )


def _recipe_configs() -> dict:
    """--recipes' configs (configs/NAME.py), read as hdge-train reads them."""
    experiments = ExperimentConfigs(Path(configs.__file__).parent)
    try:
        return {name: experiments.load(name) for name in _RECIPES.value}
    except ValueError as err:
        raise app.UsageError(f"--recipes: {err}") from err


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _check_list_flags()
    try:
        bench.parse_network(_NETWORK.value)
        options = bench.TimingOptions(
            warmup=_WARMUP.value,
            repeats=_REPEATS.value,
            eval_images=_EVAL_IMAGES.value,
            eval_batch_size=_EVAL_BATCH_SIZE.value,
            eval_repeats=_EVAL_REPEATS.value,
            pgd_steps=_PGD_STEPS.value,
            sgld_repeats=_SGLD_REPEATS.value,
            matmul_size=_MATMUL_SIZE.value,
        )
        torch = None
        if _TORCH_PYTHON.value:
            torch = bench.TorchYardstick(_TORCH_PYTHON.value, _TORCH_YARDSTICK.value)
        if _ROUNDS.value < 1:
            raise ValueError(f"--rounds must be >= 1, got {_ROUNDS.value}.")
    except (ValueError, FileNotFoundError) as err:
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
        base_config=base.get_config(),
        torch=torch,
        rounds=_ROUNDS.value,
    )
    if _RECIPES.value:
        report["recipes"] = bench.recipe_epochs(
            _recipe_configs(),
            epochs=_RECIPE_EPOCHS.value,
            rounds=_ROUNDS.value,
        )
    bench.write_report(report, _OUTPUT.value)
    print(bench.format_report(report))
    print(f"\nWrote {_OUTPUT.value}")


PROGRAM = cli.Program("hdge-bench", main, FLAGS)


def run(argv: list[str] | None = None) -> None:
    """The console script; `argv` (the program first) defaults to sys.argv."""
    PROGRAM.run(argv)


if __name__ == "__main__":
    run()
