"""hdge-reproduce: the plan's jobs and command lines, the seed summary and its
verdicts against hand computations, the scheduler on fake jobs, and one
end-to-end run of the tiny reproduction (with a second, cached call)."""

import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hdge_tf import configs
from hdge_tf.bin import cli, hdge_reproduce
from hdge_tf.configs import reproduce_mnist5k
from hdge_tf.reproduce import ExperimentConfigs, build_report, plan, scheduler, summary
from hdge_tf.reproduce.plan import Job
from hdge_tf.reproduce.summary import Cell

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ExperimentConfigs(Path(configs.__file__).parent)


def build_plan(config, root, seeds=None):
    """The plan hdge-reproduce builds: the shipped configs, its job program."""
    return plan.build_plan(
        config, root, EXPERIMENTS, hdge_reproduce.JOB_PROGRAM, seeds=seeds
    )


# Plan ------------------------------------------------------------------------------


def _flag_values(command, name):
    """Every value of --NAME=... in `command`, in order."""
    prefix = f"--{name}="
    return [arg[len(prefix) :] for arg in command if arg.startswith(prefix)]


def test_plan_has_the_judge_variants_and_ablation_runs(tmp_path):
    """Tiny config, 2 seeds: the judge, 6 variants and one ablation run (K = 64;
    K = 128 is hdge's own) per seed: 1 + 2 * (6 + 1) = 15 jobs."""
    config = reproduce_mnist5k.get_config("tiny")
    assert sorted(config.variants) == [
        "ce",
        "hdge",
        "hdge_jem",
        "hdge_jem_fixed_scale",
        "hdge_jem_pxy",
        "hdge_paper",
    ]
    jobs = build_plan(config, tmp_path, seeds=2)
    assert len(jobs) == 1 + 2 * (len(config.variants) + 1)
    assert jobs[0].name == "judge" and jobs[0].seed is None
    expected = ["judge"] + [
        f"{v}/seed{s}" for s in (0, 1) for v in [*config.variants, "hdge_k64"]
    ]
    assert [j.name for j in jobs] == expected
    for job in jobs:
        if job.seed is not None:
            assert job.workdir == tmp_path / "runs" / job.variant / f"seed{job.seed}"
        assert job.log.parent == tmp_path / "logs"
        assert not job.finished
    # Dependencies come first in the list.
    seen = set()
    for job in jobs:
        assert set(job.after) <= seen, job.name
        seen.add(job.name)


def _warm_started_jem():
    """The tiny config with HDGE + JEM warm-started from the same seed's hdge run
    (the shipped config trains it from scratch)."""
    config = reproduce_mnist5k.get_config("tiny")
    config.variants.hdge_jem.overrides = ("train.init_from={hdge}",)
    config.variants.hdge_jem.after = "hdge"
    return config


def test_plan_formats_the_warm_start_and_its_dependency(tmp_path):
    """hdge_jem's "{hdge}" is the same seed's hdge workdir, and it waits for that
    run (and the judge, since it draws samples)."""
    config = _warm_started_jem()
    jobs = {j.name: j for j in build_plan(config, tmp_path, seeds=2)}
    jem = jobs["hdge_jem/seed1"]
    assert f"--config.train.init_from={tmp_path}/runs/hdge/seed1" in jem.command
    assert "hdge/seed1" in jem.after and "judge" in jem.after
    assert "hdge/seed0" not in jem.after
    assert f"--judge={tmp_path}/runs/judge" in jem.command
    assert "--samples" in jem.command
    assert jobs["hdge_paper/seed1"].after == ()  # no samples, no "{...}"
    assert "--samples" not in jobs["hdge_paper/seed1"].command


def test_plan_placeholder_of_another_variant(tmp_path):
    """A config copy whose hdge_paper starts from ce: "{ce}" and after="ce"."""
    config = reproduce_mnist5k.get_config("tiny")
    config.variants.hdge_paper.overrides = ("train.init_from={ce}",)
    config.variants.hdge_paper.after = "ce"
    jobs = {j.name: j for j in build_plan(config, tmp_path, seeds=2)}
    paper = jobs["hdge_paper/seed0"]
    assert f"--config.train.init_from={tmp_path}/runs/ce/seed0" in paper.command
    assert paper.after == ("ce/seed0",)


def test_every_run_gets_its_seed_last(tmp_path):
    """--config.seed=<seed> comes after every global override (a global
    "seed=99" included), so the job's seed wins; the judge keeps its own."""
    config = reproduce_mnist5k.get_config("tiny")
    config.overrides += ("seed=99",)
    jobs = build_plan(config, tmp_path, seeds=2)
    for job in jobs:
        seeds = _flag_values(job.command, "config.seed")
        expected = "1000" if job.seed is None else str(job.seed)
        assert seeds[-1] == expected, job.name
        last_seed = max(
            i for i, a in enumerate(job.command) if a.startswith("--config.seed=")
        )
        assert last_seed == len(job.command) - 1 or job.seed is None
        # Every global override is passed on.
        for override in config.overrides:
            assert f"--config.{override}" in job.command


def test_ablation_runs_override_the_queue_size_last(tmp_path):
    """hdge_k64 is the hdge config with loss.queue_size=64 after the tiny
    config's global 128; hdge keeps 128, which is why no hdge_k128 runs."""
    config = reproduce_mnist5k.get_config("tiny")
    assert plan.base_queue_size(config, EXPERIMENTS) == 128
    jobs = {j.name: j for j in build_plan(config, tmp_path, seeds=2)}
    ablation = jobs["hdge_k64/seed1"]
    assert "--config.loss.queue_size=64" in ablation.command
    assert _flag_values(ablation.command, "config.loss.queue_size")[-1] == "64"
    assert _flag_values(ablation.command, "config")[0].endswith("mnist5k_hdge.py")
    assert _flag_values(jobs["hdge/seed1"].command, "config.loss.queue_size") == ["128"]
    assert "hdge_k128/seed0" not in jobs


def test_full_plan_skips_the_base_queue_size(tmp_path):
    """Full config: hdge's own K is 4,096 (mnist5k_hdge), so four ablation runs
    per seed: 1 + 1 * (6 + 4) jobs."""
    config = reproduce_mnist5k.get_config()
    assert plan.base_queue_size(config, EXPERIMENTS) == 4096
    names = [j.name for j in build_plan(config, tmp_path, seeds=1)]
    assert len(names) == 11
    assert [n for n in names if n.startswith("hdge_k")] == [
        "hdge_k64/seed0",
        "hdge_k256/seed0",
        "hdge_k1024/seed0",
        "hdge_k16384/seed0",
    ]


def test_plan_needs_a_seed(tmp_path):
    """seeds=0 is an error, not "use the config's default"."""
    config = reproduce_mnist5k.get_config("tiny")
    with pytest.raises(ValueError, match="seeds"):
        build_plan(config, tmp_path, seeds=0)
    with pytest.raises(ValueError, match="seeds"):
        build_plan(config, tmp_path, seeds=-1)
    assert len(build_plan(config, tmp_path)) == 15  # None: the config's 2


def test_every_run_config_is_checked_before_any_run(tmp_path):
    """hdge-reproduce checks each run's training config as hdge-train would, so a
    bad override fails at once, not in every run's log."""
    config = reproduce_mnist5k.get_config("tiny")
    plan.check_runs(build_plan(config, tmp_path))  # the shipped runs are valid
    for overrides, message in (
        (("loss.temperature=0",), "loss.temperature=0.0: expected a finite number"),
        (("train.no_such=1",), "--config.train.no_such: the config has no field"),
        (("train.epochs=abc",), "--config.train.epochs=abc: expected an integer."),
    ):
        config.variants.hdge.overrides = overrides
        with pytest.raises(ValueError, match=f"^run hdge/seed0: {re.escape(message)}"):
            plan.check_runs(build_plan(config, tmp_path))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sampling.steps", -1, "sampling.steps=-1: expected an integer >= 0."),
        ("queue_sizes", (64, 0), "queue_sizes=(64, 0): expected a tuple of queue"),
        ("ablation_variant", "hgde", "ablation_variant='hgde': expected one of"),
    ],
)
def test_the_reproduction_config_is_checked(key, value, message):
    config = reproduce_mnist5k.get_config("tiny")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        plan.check_config(config)


def test_jobs_run_the_job_program_on_the_shipped_config_files(tmp_path):
    """Each command is hdge-reproduce's job program, then the experiment config
    file from the directory the plan was given."""
    jobs = build_plan(reproduce_mnist5k.get_config("tiny"), tmp_path, seeds=1)
    program = hdge_reproduce.JOB_PROGRAM
    assert program[1:] == ("-m", "hdge_tf.bin.hdge_reproduce_job")
    for job in jobs:
        assert job.command[: len(program)] == program
        [config_file] = _flag_values(job.command, "config")
        assert Path(config_file).parent == EXPERIMENTS.directory
        assert Path(config_file).is_file()


def test_experiment_configs_read_files_of_any_directory(tmp_path):
    """A directory of the caller's own: its NAME.py is loaded from the file; an
    unknown name is an error naming the missing file."""
    (tmp_path / "mine.py").write_text(
        "import ml_collections\n\n\ndef get_config():\n"
        "    return ml_collections.ConfigDict({'loss': {'queue_size': 7}})\n"
    )
    mine = ExperimentConfigs(tmp_path)
    assert mine.file("mine") == tmp_path / "mine.py"
    assert mine.load("mine").loss.queue_size == 7
    with pytest.raises(ValueError, match="missing.py"):
        mine.load("missing")
    shipped = EXPERIMENTS.load("mnist5k_hdge")
    assert shipped.loss.queue_size == 4096


def test_job_is_finished_when_its_record_exists(tmp_path):
    """Job.finished reads <workdir>/reproduce.json."""
    job = Job("x/seed0", "x", 0, tmp_path / "x", ("true",))
    assert job.record == tmp_path / "x" / "reproduce.json"
    assert not job.finished
    job.workdir.mkdir()
    job.record.write_text("{}")
    assert job.finished


# Summary ---------------------------------------------------------------------------

# Hand-made records: variant "a" and "b", seeds given out of order.
A_ACCURACY = {0: 0.90, 1: 0.94, 2: 0.92}
A_NOISE = {0: 0.70, 1: 0.80, 2: 0.60}
B_ACCURACY = {0: 0.80, 1: 0.83, 2: 0.86}
B_AGREEMENT = {0: 0.5, 1: 0.25, 2: 1.0}


def _records():
    records = []
    for seed in (2, 0, 1):
        records.append(
            {
                "variant": "a",
                "seed": seed,
                "metrics": {
                    "accuracy": A_ACCURACY[seed],
                    "auroc": {"log_px": {"noise": A_NOISE[seed]}},
                    "kept_epoch": 1,
                    "note": "text is dropped",
                    "flag": True,
                },
            }
        )
        records.append(
            {
                "variant": "b",
                "seed": seed,
                "metrics": {"accuracy": B_ACCURACY[seed]},
                "samples": {
                    "conditional": {
                        "fresh": {"100": {"class_agreement": B_AGREEMENT[seed]}},
                        "start": "x",
                    }
                },
            }
        )
    return records


def test_flatten_keeps_numbers_only():
    """Nested dicts become dotted paths; strings and booleans are dropped."""
    tree = {"a": 1, "b": {"c": 2.5, "d": {"e": 3}}, "s": "x", "t": False}
    assert summary.flatten(tree) == {"a": 1.0, "b.c": 2.5, "b.d.e": 3.0}


def test_aggregate_means_and_spreads_per_seed():
    """Cells hold the per-seed values in seed order, with numpy's mean and
    sample standard deviation."""
    cells = summary.aggregate(_records())
    assert set(cells) == {"a", "b"}
    assert set(cells["a"]) == {"accuracy", "auroc.log_px.noise", "kept_epoch"}
    assert set(cells["b"]) == {
        "accuracy",
        "samples.conditional.fresh.100.class_agreement",
    }
    for variant, path, values in (
        ("a", "accuracy", A_ACCURACY),
        ("a", "auroc.log_px.noise", A_NOISE),
        ("b", "accuracy", B_ACCURACY),
        ("b", "samples.conditional.fresh.100.class_agreement", B_AGREEMENT),
    ):
        cell = cells[variant][path]
        hand = [values[s] for s in (0, 1, 2)]
        assert cell.seeds == (0, 1, 2)
        assert cell.values == tuple(hand)
        assert cell.n == 3
        assert cell.mean == pytest.approx(np.mean(hand), rel=1e-12)
        assert cell.std == pytest.approx(np.std(hand, ddof=1), rel=1e-12)
    # By hand: accuracies .90 .94 .92, mean .92, deviations ±.02, s = .02.
    assert cells["a"]["accuracy"].mean == pytest.approx(0.92)
    assert cells["a"]["accuracy"].std == pytest.approx(0.02)
    assert cells["a"]["accuracy"].as_dict() == {
        "mean": cells["a"]["accuracy"].mean,
        "std": cells["a"]["accuracy"].std,
        "n": 3,
        "values": [0.90, 0.94, 0.92],
        "seeds": [0, 1, 2],
    }
    assert Cell((0.5,), (3,)).std == 0.0


# a: 1, 2, 3 (mean 2, s = 1); b constant (s = 0): stderr = 1 / sqrt(3) = 0.57735,
# twice that 1.1547.
SPREAD = Cell((1.0, 2.0, 3.0), (0, 1, 2))


def _constant(value):
    return Cell((value,) * 3, (0, 1, 2))


def test_compare_holds_reverses_or_is_unresolved_by_two_standard_errors():
    """A gap of 1.2 > 1.1547 holds, 1.1 does not; the opposite gaps reverse."""
    stderr = 1 / math.sqrt(3)
    result = summary.compare(SPREAD, _constant(0.8))
    assert result["difference"] == pytest.approx(1.2)
    assert result["stderr"] == pytest.approx(stderr)
    assert result["verdict"] == summary.HOLDS
    assert summary.compare(SPREAD, _constant(0.9))["verdict"] == summary.UNRESOLVED
    assert summary.compare(SPREAD, _constant(3.2))["verdict"] == summary.REVERSED
    assert summary.compare(SPREAD, _constant(3.1))["verdict"] == summary.UNRESOLVED
    # Both spread: .92 ± .02 vs .82 ± .02, stderr sqrt(2 * .02² / 3) = .01633.
    a, b = Cell((0.90, 0.92, 0.94), (0, 1, 2)), Cell((0.80, 0.82, 0.84), (0, 1, 2))
    result = summary.compare(a, b)
    assert result["stderr"] == pytest.approx(math.sqrt(2 * 0.02**2 / 3))
    assert result["verdict"] == summary.HOLDS
    close = Cell((0.89, 0.91, 0.93), (0, 1, 2))  # gap .01 < 2 * .01633
    assert summary.compare(a, close)["verdict"] == summary.UNRESOLVED


def test_compare_lower_is_better_flips_the_verdict():
    """For ECE-like metrics the higher mean loses."""
    assert (
        summary.compare(SPREAD, _constant(0.8), higher_is_better=False)["verdict"]
        == summary.REVERSED
    )
    assert (
        summary.compare(_constant(0.8), SPREAD, higher_is_better=False)["verdict"]
        == summary.HOLDS
    )
    assert (
        summary.compare(SPREAD, _constant(0.9), higher_is_better=False)["verdict"]
        == summary.UNRESOLVED
    )


def test_within_and_at_least_thresholds():
    """within: mean(a) >= mean(b) - tolerance; at_least: mean vs a target."""
    a = Cell((0.91, 0.92, 0.93), (0, 1, 2))  # mean .92
    b = Cell((0.924,) * 3, (0, 1, 2))  # .004 better
    assert summary.within(a, b, 0.005)["verdict"] == summary.HOLDS
    kept = summary.within(a, b, 0.003)
    assert kept["difference"] == pytest.approx(-0.004)
    assert kept["verdict"] == "does not hold: -0.0040"
    assert summary.at_least(a, 0.9)["verdict"] == summary.HOLDS
    assert summary.at_least(a, 0.93)["verdict"] == "does not hold: 0.9200"
    ece = Cell((0.01, 0.02, 0.03), (0, 1, 2))  # mean .02
    assert summary.at_least(ece, 0.03, higher_is_better=False)["verdict"] == (
        summary.HOLDS
    )
    assert summary.at_least(ece, 0.01, higher_is_better=False)["verdict"] == (
        "does not hold: 0.0200"
    )


# Scheduler -------------------------------------------------------------------------

RECORD_SCRIPT = """
import json, pathlib, sys
workdir = pathlib.Path({workdir!r})
{check}
workdir.mkdir(parents=True, exist_ok=True)
print("running {name}")
record = {{"variant": {variant!r}, "seed": {seed!r}, "metrics": {{"accuracy": 0.9,
    "ece": 0.01, "auroc": {{"log_px": {{"noise": 0.5}}}}}}}}
(workdir / "reproduce.json").write_text(json.dumps(record))
"""


def _fake_job(root, variant, seed=0, after=(), check="", fail=False):
    """A job whose command writes a minimal record (after `check`), or exits 1;
    either way it leaves a marker that says it ran."""
    name = f"{variant}/seed{seed}"
    workdir = root / "runs" / variant / f"seed{seed}"
    marker = root / "ran" / name.replace("/", "_")
    mark = f"pathlib.Path({str(marker)!r}).parent.mkdir(exist_ok=True)\n"
    mark += f"pathlib.Path({str(marker)!r}).touch()\n"
    if fail:
        script = "import pathlib, sys\n" + mark + "sys.exit(1)\n"
    else:
        script = (
            "import pathlib\n"
            + mark
            + RECORD_SCRIPT.format(
                workdir=str(workdir), check=check, name=name, variant=variant, seed=seed
            )
        )
    command = (sys.executable, "-c", script)
    log = root / "logs" / f"{name.replace('/', '_')}.log"
    return Job(name, variant, seed, workdir, command, tuple(after), log)


def _ran(root, job):
    return (root / "ran" / job.name.replace("/", "_")).exists()


def _run(jobs, **kwargs):
    lines = []
    status = scheduler.run_jobs(jobs, progress=lines.append, **kwargs)
    return status, lines


def test_scheduler_runs_dependencies_first(tmp_path):
    """The second job checks the first's record exists before it writes its own;
    both finish, and each progress line names its job and its numbers."""
    first = _fake_job(tmp_path, "first")
    check = f"assert pathlib.Path({str(first.record)!r}).is_file()"
    second = _fake_job(tmp_path, "second", after=[first.name], check=check)
    # Listed dependent-first: the scheduler must still wait.
    status, lines = _run([second, first], parallel=2)
    assert status == {"first/seed0": "done", "second/seed0": "done"}
    assert first.finished and second.finished
    assert len(lines) == 2
    assert "first/seed0" in lines[0] and "second/seed0" in lines[1]
    for line in lines:
        assert "accuracy 90.0%" in line
        assert "ECE 0.010" in line
        assert "log p(x) AUROC noise 0.500" in line
    assert "running second/seed0" in second.log.read_text()


def test_scheduler_blocks_dependents_of_a_failed_job(tmp_path):
    """A failure blocks its dependents (transitively), not unrelated jobs."""
    bad = _fake_job(tmp_path, "bad", fail=True)
    child = _fake_job(tmp_path, "child", after=[bad.name])
    grandchild = _fake_job(tmp_path, "grandchild", after=[child.name])
    other = _fake_job(tmp_path, "other")
    jobs = [bad, child, grandchild, other]
    status, lines = _run(jobs, parallel=1)
    assert status == {
        "bad/seed0": "failed",
        "child/seed0": "blocked",
        "grandchild/seed0": "blocked",
        "other/seed0": "done",
    }
    assert _ran(tmp_path, bad) and _ran(tmp_path, other)
    assert not _ran(tmp_path, child) and not _ran(tmp_path, grandchild)
    assert not child.finished and other.finished
    assert len(lines) == 4
    for job in jobs:
        assert any(job.name in line for line in lines), job.name
    assert any("bad/seed0: FAILED (exit 1)" in line for line in lines)


def test_scheduler_skips_finished_jobs(tmp_path):
    """A job whose record exists is cached and its (failing) command never
    runs; its dependents do run."""
    cached = _fake_job(tmp_path, "cached", fail=True)
    cached.workdir.mkdir(parents=True)
    record = {
        "variant": "cached",
        "seed": 0,
        "metrics": {"accuracy": 0.5, "ece": 0.2, "auroc": {"log_px": {}}},
    }
    cached.record.write_text(json.dumps(record))
    after = _fake_job(tmp_path, "after", after=[cached.name])
    status, lines = _run([cached, after])
    assert status == {"cached/seed0": "cached", "after/seed0": "done"}
    assert not _ran(tmp_path, cached) and _ran(tmp_path, after)
    assert "cached/seed0" in lines[0] and "skipped" in lines[0]
    assert "accuracy 50.0%" in lines[0]
    assert "after/seed0" in lines[1] and "skipped" not in lines[1]


def test_scheduler_runs_jobs_in_parallel(tmp_path):
    """Two jobs that each wait for the other to have started can only both
    finish when they run at the same time."""
    wait = (
        "import time\n"
        "workdir.parent.parent.mkdir(parents=True, exist_ok=True)\n"
        "(workdir.parent.parent / '{me}.started').touch()\n"
        "deadline = time.time() + 60\n"
        "while not (workdir.parent.parent / '{other}.started').exists():\n"
        "    assert time.time() < deadline, 'not run in parallel'\n"
        "    time.sleep(0.05)"
    )
    left = _fake_job(tmp_path, "left", check=wait.format(me="left", other="right"))
    right = _fake_job(tmp_path, "right", check=wait.format(me="right", other="left"))
    status, lines = _run([left, right], parallel=2)
    assert status == {"left/seed0": "done", "right/seed0": "done"}
    assert {line.split(":")[0].split("] ")[1] for line in lines} == {
        "left/seed0",
        "right/seed0",
    }


def test_scheduler_rejects_bad_arguments(tmp_path):
    """Unknown dependencies and parallel < 1 are errors before anything runs."""
    orphan = _fake_job(tmp_path, "orphan", after=["nobody/seed0"])
    with pytest.raises(ValueError, match="nobody/seed0"):
        _run([orphan])
    with pytest.raises(ValueError, match="parallel"):
        _run([_fake_job(tmp_path, "x")], parallel=0)
    assert not _ran(tmp_path, orphan)


# End to end ------------------------------------------------------------------------


def _progress_lines(stdout):
    return [line for line in stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)]


def _png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The judge and what --only picks: hdge and hdge_jem. The queue-size ablation's
# runs are variants like these (one more training); its table and figure are
# test_report_of_two_seeds'.
TINY_RUNS = 3


@pytest.mark.slow
def test_hdge_reproduce_tiny_end_to_end(tmp_path):
    """The tiny reproduction at one seed, of the variants HDGE and HDGE + JEM
    (every variant is one config file; the report of every variant, the ablation
    and several seeds is test_report_of_two_seeds' on hand-made records): a
    report whose numbers are the runs' own (read back from the trainer's
    metrics.json), figures, every start of the JEM model's samples; a second
    call reuses every run. hdge-reproduce runs in process (`cli.call`), each of
    its runs in a process of its own."""
    args = [
        f"--config={REPO}/configs/reproduce_mnist5k.py:tiny",
        f"--workdir={tmp_path}",
        "--seeds=1",
        "--parallel=2",
        "--threads=1",
        "--only=hdge,hdge_jem",
    ]
    started = time.time()
    first = cli.call(hdge_reproduce, args)
    second_started = time.time()
    second = cli.call(hdge_reproduce, args)
    seconds = second_started - started, time.time() - second_started
    records = sorted((tmp_path / "runs").glob("**/reproduce.json"))
    mtimes = {path: path.stat().st_mtime_ns for path in records}
    assert first.status == 0, first.stderr[-3000:]
    assert len(_progress_lines(first.stdout)) == TINY_RUNS, first.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    missing = [
        "ce/seed0",
        "hdge_jem_fixed_scale/seed0",
        "hdge_jem_pxy/seed0",
        "hdge_k64/seed0",
        "hdge_paper/seed0",
    ]
    assert sorted(report["missing_runs"]) == missing
    for variant in ("hdge", "hdge_jem"):
        accuracy = report["variants"][variant]["accuracy"]
        expected = json.loads(
            (tmp_path / "runs" / variant / "seed0" / "metrics.json").read_text()
        )["test_accuracy"]
        assert accuracy["n"] == 1
        assert accuracy["seeds"] == [0]
        np.testing.assert_allclose(accuracy["values"], [expected], atol=1e-6)
        assert accuracy["mean"] == pytest.approx(expected, abs=1e-6)
    # One seed has no spread: every comparison says so (a tolerance has a verdict).
    compared = [c for c in report["claims"] if "(within " not in c["claim"]]
    assert compared
    assert all(c["verdict"] == summary.TOO_FEW for c in compared), compared
    markdown = (tmp_path / "report.md").read_text()
    claims = markdown.split("## Claims", 1)[1].split("\n## ", 1)[0]
    assert "| claim | paper (CIFAR-10) | ours | verdict |" in claims
    # The queue-size table holds the K that ran, the base variant's; one size
    # draws no ablation figure, and the report links none.
    assert "| 128 |" in markdown and "| 64 |" not in markdown
    assert "k_ablation.png" not in markdown
    assert not (tmp_path / "k_ablation.png").exists()
    assert _png(tmp_path / "ood_auroc.png")
    # Every start of the JEM model, at 0 steps and after the chains; the report
    # shows each and holds the variant to its targets.
    jem = report["variants"]["hdge_jem"]
    for start in ("fresh", "buffer"):
        for steps in (0, 2):
            agreement = jem[f"samples.conditional.{start}.{steps}.class_agreement"]
            assert agreement["n"] == 1
            assert all(0.0 <= v <= 1.0 for v in agreement["values"])
    assert (
        "samples.unconditional.fresh.2.inception_score"
        in (report["variants"]["hdge_jem"])
    )
    targets = {t["target"] for t in report["targets"]}
    assert "conditional samples from buffer starts (2 steps) every class >= 70%" in (
        targets
    )
    gate = jem["gate.fpr.noise"]
    assert gate["n"] == 1 and all(0.0 <= v <= 1.0 for v in gate["values"])
    assert "| variant | test TPR | FPR interp | FPR noise |" in markdown
    generative = markdown.split("## Generative quality", 1)[1]
    assert "| HDGE + JEM, SGLD on log p(x) | conditional | buffer |" in generative
    assert _png(tmp_path / "samples_hdge_jem_conditional_buffer.png")
    ceiling = report["judge"]["ceiling"]
    assert {"class_agreement", "inception_score", "frechet_distance"} <= set(ceiling)

    assert second.status == 0, second.stderr[-3000:]
    lines = _progress_lines(second.stdout)
    assert len(lines) == TINY_RUNS
    assert all("skipped" in line for line in lines), lines
    # No run's record was written again.
    assert len(mtimes) == TINY_RUNS
    assert all(t < second_started * 1e9 for t in mtimes.values())
    assert seconds[1] < seconds[0] / 3, seconds


def test_select_keeps_the_chosen_variants_and_what_they_wait_for(tmp_path):
    """--only=hdge brings the judge (its samples need it); 'ablation' stands for
    the queue-size runs; an unknown name is an error naming it."""
    jobs = build_plan(reproduce_mnist5k.get_config("tiny"), tmp_path, seeds=2)
    names = [j.name for j in plan.select(jobs, "hdge")]
    assert names == ["judge", "hdge/seed0", "hdge/seed1"]
    names = [j.name for j in plan.select(jobs, ["hdge_paper", "ablation"])]
    assert names == [
        "hdge_paper/seed0",
        "hdge_k64/seed0",
        "hdge_paper/seed1",
        "hdge_k64/seed1",
    ]
    assert plan.select(jobs, None) == jobs
    with pytest.raises(ValueError, match="hdge_xl"):
        plan.select(jobs, "hdge,hdge_xl")


def test_compare_needs_two_seeds_on_each_side():
    """One seed has no spread: even a large gap is not a verdict."""
    one = Cell((0.99,), (0,))
    many = Cell((0.5, 0.51, 0.49), (0, 1, 2))
    assert summary.compare(one, many)["verdict"] == summary.TOO_FEW
    assert summary.compare(many, one)["verdict"] == summary.TOO_FEW


def test_progress_line_names_each_starts_agreement(tmp_path):
    """A finished run's progress line: headline metrics and, per start, the
    conditional samples' agreement after the longest chains."""
    job = build_plan(reproduce_mnist5k.get_config("tiny"), tmp_path, seeds=1)[1]
    job.record.parent.mkdir(parents=True)
    scores = {"0": {"class_agreement": 0.1}, "500": {"class_agreement": 0.875}}
    job.record.write_text(
        json.dumps(
            {
                "metrics": {
                    "accuracy": 0.976,
                    "ece": 0.048,
                    "auroc": {"log_px": {"digits": 0.9997}},
                },
                "samples": {"conditional": {"fresh": scores, "buffer": scores}},
            }
        )
    )
    assert scheduler.describe(job) == (
        "accuracy 97.6%, ECE 0.048, log p(x) AUROC digits 1.000, "
        "fresh samples' class agreement 0.88, buffer samples' class agreement 0.88"
    )


# Report of several seeds ----------------------------------------------------------

# Hand-made per-seed values (seed 0, seed 1) of the tiny plan's runs at 2 seeds,
# as dotted paths of a record's "metrics" (or "samples.*").
TWO_SEEDS = {
    "ce": {"accuracy": (0.80, 0.82), "ece": (0.10, 0.11)},
    "hdge": {
        "accuracy": (0.90, 0.92),
        "ece": (0.02, 0.03),
        "samples.conditional.fresh.2.class_agreement": (0.1, 0.3),
    },
    "hdge_paper": {"accuracy": (0.85, 0.86)},
    "hdge_k64": {"accuracy": (0.88, 0.90)},
    "hdge_jem": {
        "accuracy": (0.89, 0.91),
        "gate.test_tpr": (0.95, 0.93),
        "gate.fpr.noise": (0.0, 0.1),
        "gate.fpr.interp": (0.2, 0.3),
        **{
            f"samples.conditional.{start}.{steps}.{metric}": (0.5, 0.7)
            for start in ("fresh", "buffer")
            for steps in (0, 2)
            for metric in ("class_agreement", "worst_class_agreement")
        },
        **{
            f"samples.conditional.{start}.2.{metric}": values
            for start in ("fresh", "buffer")
            for metric, values in (
                ("inception_score", (3.0, 4.0)),
                ("frechet_distance", (10.0, 20.0)),
                ("in_range_fraction", (1.0, 1.0)),
            )
        },
        "samples.unconditional.fresh.2.inception_score": (6.0, 7.0),
    },
    "hdge_jem_pxy": {"accuracy": (0.87, 0.88)},
    "hdge_jem_fixed_scale": {"accuracy": (0.88, 0.89)},
}
# log p(x) AUROCs: HDGE detects noise better than CE (holds) but not interp
# (within error bars); K = 128 (hdge) detects noise better than K = 64, interp
# worse.
AUROC = {
    "ce": {"noise": (0.50, 0.52), "interp": (0.60, 0.66)},
    "hdge": {"noise": (0.90, 0.92), "interp": (0.60, 0.70)},
    "hdge_k64": {"noise": (0.70, 0.74), "interp": (0.90, 0.90)},
}


def _nested(flat: dict[str, float]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def test_report_of_two_seeds(tmp_path):
    """build_report on hand-made records of the tiny plan at 2 seeds: every cell
    holds both seeds' values, mean and spread; each claim's verdict is the
    two-standard-error rule's; the queue-size, gate and generative tables and the
    figures are written; sample grids come from seed 0."""
    config = reproduce_mnist5k.get_config("tiny")
    jobs = build_plan(config, tmp_path, seeds=2)
    assert len(jobs) == 15
    ceiling = {"class_agreement": 0.97, "inception_score": 9.0, "frechet_distance": 1}
    for job in jobs:
        job.workdir.mkdir(parents=True)
        if job.seed is None:
            record = {"variant": "judge", "seed": 1000, "ceiling": ceiling}
            record["metrics"] = {"accuracy": 0.99}
        else:
            flat = {p: v[job.seed] for p, v in TWO_SEEDS[job.variant].items()}
            for name, values in AUROC.get(job.variant, {}).items():
                flat[f"auroc.log_px.{name}"] = values[job.seed]
            tree = _nested(flat)
            record = {"variant": job.variant, "seed": job.seed, **tree}
            record["metrics"] = {k: v for k, v in tree.items() if k != "samples"}
            # JEM runs take twice CE's time: 10 and 20 s (seeds 0, 1) against 5, 10.
            jem = job.variant.startswith("hdge_jem")
            record["train_seconds"] = (10.0 if jem else 5.0) * (1 + job.seed)
            grids = job.workdir / "samples"
            grids.mkdir()
            (grids / "conditional_buffer.png").write_bytes(
                b"\x89PNG\r\n\x1a\n" + bytes([job.seed])
            )
        job.record.write_text(json.dumps(record))

    report = build_report(config, jobs, tmp_path, EXPERIMENTS)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["missing_runs"] == []
    assert report["judge"]["ceiling"] == ceiling
    for variant, paths in TWO_SEEDS.items():
        for path, values in paths.items():
            cell = report["variants"][variant][path]
            assert cell["values"] == list(values) and cell["seeds"] == [0, 1]
            assert cell["n"] == 2
            assert cell["mean"] == pytest.approx(np.mean(values))
            assert cell["std"] == pytest.approx(np.std(values, ddof=1))
    verdicts = {c["claim"]: c["verdict"] for c in report["claims"]}
    assert verdicts == {
        "HDGE is more accurate than CE": summary.HOLDS,
        "HDGE's log p(x) detects noise better than CE's": summary.HOLDS,
        "HDGE's log p(x) detects interp better than CE's": summary.UNRESOLVED,
        "HDGE is better calibrated (lower ECE) than CE": summary.HOLDS,
        "A larger queue detects noise better (K = 128 vs 64)": summary.HOLDS,
        "A larger queue detects interp better (K = 128 vs 64)": summary.REVERSED,
        "HDGE + JEM keeps HDGE's accuracy (within 0.5 points)": (
            "does not hold: -0.0100"
        ),
        "HDGE + JEM's conditional samples are more recognizable than HDGE's": (
            summary.HOLDS
        ),
    }
    targets = {t["target"]: t["verdict"] for t in report["targets"]}
    assert (
        targets["conditional samples from buffer starts (2 steps) every class >= 70%"]
        == "does not hold: 0.6000"
    )
    assert targets["every sample inside the data range"] == summary.HOLDS
    assert (
        targets["unconditional samples' IS-analogue from fresh starts (2 steps) >= 5"]
        == summary.HOLDS
    )
    assert report["queue_sizes"] == [64, 128]

    markdown = (tmp_path / "report.md").read_text()
    assert "| HDGE is more accurate than CE |" in markdown
    assert "91.0 ± 1.4 (n=2) vs 81.0 ± 1.4 (n=2) | holds |" in markdown
    assert "| 64 | 89.0 ± 1.4 (n=2) |" in markdown
    assert "| 128 | 91.0 ± 1.4 (n=2) |" in markdown
    assert "| variant | test TPR | FPR noise | FPR interp |" in markdown
    assert "| HDGE + JEM, SGLD on log p(x) | 0.940 ± 0.014 (n=2) |" in markdown
    generative = markdown.split("## Generative quality", 1)[1]
    assert (
        "| HDGE + JEM, SGLD on log p(x) | conditional | buffer | 0.600 ± 0.141 (n=2) |"
        in generative
    )
    assert "| real test images (ceiling) |" in generative
    assert report["figures"] == ["k_ablation.png", "ood_auroc.png"] + [
        f"samples_{job.variant}_conditional_buffer.png" for job in jobs if job.seed == 0
    ]
    for figure in ("k_ablation.png", "ood_auroc.png"):
        assert _png(tmp_path / figure)
    timed = markdown.split("## Time to quality", 1)[1].split("## ", 1)[0]
    assert "against CE (no contrastive term)'s" in timed
    assert "| CE (no contrastive term) | 8 ± 4 (n=2) | 1.00x |" in timed
    assert "| HDGE + JEM, SGLD on log p(x) | 15 ± 7 (n=2) | 2.00x |" in timed
    assert report["variants"]["hdge_jem"]["train_seconds"]["values"] == [10.0, 20.0]
    copied = tmp_path / "samples_hdge_jem_conditional_buffer.png"
    assert copied.read_bytes()[-1] == 0  # seed 0's grid
