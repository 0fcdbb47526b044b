"""What `hdge-reproduce` runs: one `Job` per (variant, seed), plus the judge.

A job is a command line of the job program hdge-reproduce passes in (train,
evaluate and, for generative variants, sample: `job.run_job`), so each run can be
repeated by hand and runs in its own process: a crash or a memory leak stays in one
run. The variants' experiment configs come from the `ExperimentConfigs` passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from hdge_tf import config_checks, config_files
from hdge_tf.reproduce.experiments import ExperimentConfigs

JUDGE = "judge"
RECORD = "reproduce.json"  # a finished job's results, in its workdir


@dataclasses.dataclass(frozen=True)
class Job:
    name: str  # "hdge/seed1", "hdge_k64/seed0", "judge"
    variant: str
    seed: int | None
    workdir: Path
    command: tuple[str, ...]
    after: tuple[str, ...] = ()  # job names that must finish first
    log: Path | None = None

    @property
    def record(self) -> Path:
        return self.workdir / RECORD

    @property
    def finished(self) -> bool:
        return self.record.is_file()


ABLATION_PREFIX = "hdge_k"


def ablation_variant(queue_size: int) -> str:
    return f"{ABLATION_PREFIX}{queue_size}"


def base_queue_size(
    config: ml_collections.ConfigDict, experiments: ExperimentConfigs
) -> int:
    """K of the ablated variant's own runs (after every override)."""
    variant = config.variants[config.ablation_variant]
    k = experiments.load(variant.config).loss.queue_size
    for override in (*config.overrides, *variant.overrides):
        key, _, value = override.partition("=")
        if key == "loss.queue_size":
            k = int(value)
    return int(k)


def build_plan(
    config: ml_collections.ConfigDict,
    root: str | Path,
    experiments: ExperimentConfigs,
    program: Sequence[str],
    seeds: int | None = None,
) -> list[Job]:
    """Every job, dependencies first: the judge, then each seed's variants and
    ablation runs. `experiments` holds the config files the variants name;
    `program` is the job program's command (its flags follow, see
    `job.run_job`); `seeds` overrides config.seeds."""
    root = Path(root)
    seeds = int(config.seeds if seeds is None else seeds)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}.")
    judge_dir = root / "runs" / JUDGE

    def run(spec) -> tuple[str, ...]:
        """The job program on the variant's experiment config file."""
        return (*program, f"--config={experiments.file(spec.config)}")

    jobs = [
        _job(
            config,
            root,
            JUDGE,
            None,
            run(config.judge),
            config.judge.overrides,
            flags=("--role=judge",),
            after=(),
        )
    ]
    base_k = base_queue_size(config, experiments)
    for seed in range(seeds):
        workdirs = {v: str(_workdir(root, v, seed)) for v in config.variants}
        for variant, spec in config.variants.items():
            overrides = tuple(o.format(**workdirs) for o in spec.overrides)
            after = (f"{spec.after}/seed{seed}",) if spec.after else ()
            flags = ()
            if spec.samples:
                flags = ("--samples", f"--judge={judge_dir}")
                after += (JUDGE,)
            jobs.append(
                _job(config, root, variant, seed, run(spec), overrides, flags, after)
            )
        ablated = config.variants[config.ablation_variant]
        for k in config.queue_sizes:
            if int(k) == base_k:
                continue
            variant = ablation_variant(int(k))
            jobs.append(
                _job(
                    config,
                    root,
                    variant,
                    seed,
                    run(ablated),
                    (*ablated.overrides, f"loss.queue_size={int(k)}"),
                    (),
                    (),
                )
            )
    return jobs


def _workdir(root: Path, variant: str, seed: int | None) -> Path:
    if seed is None:
        return root / "runs" / variant
    return root / "runs" / variant / f"seed{seed}"


def _job(config, root, variant, seed, run, overrides, flags, after) -> Job:
    """The job of `variant` at `seed` (None: the judge, whose overrides carry its
    own seed): `run` (the job program on the variant's config file), then the
    run's flags."""
    workdir = _workdir(root, variant, seed)
    name = variant if seed is None else f"{variant}/seed{seed}"
    overrides = [*config.overrides, *overrides]
    if seed is not None:
        overrides.append(f"seed={seed}")
    command = (
        *run,
        f"--workdir={workdir}",
        f"--variant={variant}",
        f"--sampling={_sampling_flag(config.sampling)}",
        *flags,
        *(f"--config.{o}" for o in overrides),
    )
    log = root / "logs" / f"{name.replace('/', '_')}.log"
    return Job(name, variant, seed, workdir, command, tuple(after), log)


def _sampling_flag(sampling) -> str:
    return ",".join(
        f"{k}={sampling[k]}" for k in ("per_class", "unconditional", "steps", "seed")
    )


def select(jobs: list[Job], names: str | list[str] | None) -> list[Job]:
    """The jobs of the variants in `names` ("ablation" stands for every queue-size
    run, "judge" for the judge) and every job they wait for; None keeps all."""
    if not names:
        return jobs
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    known = {job.variant for job in jobs} | {"ablation"}
    unknown = set(names) - known
    if unknown:
        raise ValueError(
            f"Unknown variants {sorted(unknown)}; expected some of {sorted(known)}."
        )
    by_name = {job.name: job for job in jobs}
    chosen = {
        job.name
        for job in jobs
        if job.variant in names
        or ("ablation" in names and job.variant.startswith(ABLATION_PREFIX))
    }
    todo = list(chosen)
    while todo:  # what the chosen jobs wait for
        for name in by_name[todo.pop()].after:
            if name not in chosen:
                chosen.add(name)
                todo.append(name)
    return [job for job in jobs if job.name in chosen]


# The reproduction's own counts: (dotted key, smallest value).
_COUNTS = (
    ("seeds", 1),
    ("sampling.per_class", 1),
    ("sampling.unconditional", 1),
    ("sampling.steps", 0),
    ("sampling.seed", 0),
)


def check_config(config: ml_collections.ConfigDict) -> None:
    """The reproduction config's own values, with config_checks' messages."""
    for key, low in _COUNTS:
        value = config
        for part in key.split("."):
            value = value[part]
        if type(value) is not int or value < low:
            raise ValueError(f"{key}={value!r}: expected an integer >= {low}.")
    sizes = config.queue_sizes
    if not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes
    ):
        raise ValueError(
            f"queue_sizes={sizes!r}: expected a tuple of queue sizes (integers >= 1)."
        )
    if config.ablation_variant not in config.variants:
        raise ValueError(
            f"ablation_variant={config.ablation_variant!r}: expected one of the "
            f"variants {tuple(config.variants)}."
        )


def run_config(job: Job) -> ml_collections.ConfigDict:
    """The training config `job` runs: its --config file with its --config.*
    overrides, read as its program reads them."""
    spec = next(a.split("=", 1)[1] for a in job.command if a.startswith("--config="))
    config = config_files.load(spec)
    overrides = {}
    for arg in job.command:
        if arg.startswith("--config."):
            key, _, text = arg.removeprefix("--config.").partition("=")
            overrides[key] = config_files.override_value(config, key, text)
    return config_files.with_overrides(config, overrides)


def check_runs(jobs: Sequence[Job]) -> None:
    """Every job's training config checked as hdge-train checks it, before any run
    starts: a bad override fails now, not in each run's log. A run that warm-starts
    from a run of the plan (it waits for it) has no model to check yet."""
    for job in jobs:
        try:
            config = run_config(job)
            if job.after and config.train.init_from:
                config.train.init_from = ""
            config_checks.check_config(config)
        except ValueError as err:
            raise ValueError(f"run {job.name}: {err}") from None
