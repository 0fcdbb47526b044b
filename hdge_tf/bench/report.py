"""The benchmark's report: markdown tables to print, the JSON file to keep.

With several rounds the tables show every round (a `round` column); the checks
show the mean over rounds with its min-max range.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from hdge_tf.markdown import table

_BF16_NOTE = {
    True: " with native bfloat16 (AMX/AVX512-BF16)",
    False: " without native bfloat16 (no AMX/AVX512-BF16: bf16 is emulated)",
}
_ONEDNN_NOTE = {
    True: "; oneDNN CPU kernels",
    False: "; Eigen CPU kernels (TF_ENABLE_ONEDNN_OPTS=0 or TF imported first)",
}
_VERDICT = {True: "pass", False: "FAIL", None: "n/a"}


def _seconds_list(values: Iterable[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in values)


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _matmul_rate(r: dict) -> float | None:
    """The matmul GFLOP/s of the configuration's compute dtype, measured in its
    process (older reports have none)."""
    if "bfloat16" in r["precision"]:
        return r.get("matmul_gflops_bfloat16")
    return r.get("matmul_gflops_float32")


def _percent_of_matmul(gflops: float | None, r: dict) -> str:
    matmul = _matmul_rate(r)
    return "—" if gflops is None or not matmul else f"{100 * gflops / matmul:.0f}"


def _several_rounds(results: list[dict]) -> bool:
    return len({r.get("round", 1) for r in results}) > 1


def _target(check: dict) -> str:
    if check["op"] is None:
        return "—"
    if check["op"] == "within":
        return f"1 ± {check['bound']:g}"
    return f"{check['op']} {check['bound']:g}"


def _setting_line(report: dict) -> list[str]:
    """What was measured where: network, input, classes, K, TF, CPUs, the
    host's matmul GFLOP/s and the PyTorch yardstick."""
    first, env = report["configurations"][0], report["environment"]
    shape = "x".join(str(d) for d in first["image_shape"])
    return [
        f"Network {first['network']}, input {shape}, {first['num_classes']} "
        f"classes, K={first['queue_size']}; TF {env['tensorflow']}, "
        f"{env['cpus']} CPUs"
        + (f" ({env['cpu_model']})" if env.get("cpu_model") else "")
        + _BF16_NOTE.get(env.get("cpu_native_bf16"), "")
        + _ONEDNN_NOTE.get(env.get("onednn"), "")
        + ("" if report["isolated"] else "; not isolated: RSS is cumulative"),
        *_matmul_line(env),
        *_torch_line(report),
        "",
    ]


def _matmul_line(env: dict) -> list[str]:
    if env.get("matmul_gflops_float32") is None:
        return []
    return [
        f"Matmul {env['matmul_gflops_float32']:.1f} GFLOP/s float32, "
        f"{env['matmul_gflops_bfloat16']:.1f} GFLOP/s bfloat16 (this host, "
        'square matmul). "% of matmul": the step\'s GFLOP/s over the matmul '
        "GFLOP/s of its compute dtype measured in its own process right after "
        "its steps."
    ]


def _torch_line(report: dict) -> list[str]:
    torch = report.get("torch")
    if not torch:
        return []
    versions = {
        (r.get("torch") or {}).get("torch") for r in report["configurations"]
    } - {None}
    return [
        f"PyTorch yardstick {torch['script']} (torch "
        f"{', '.join(sorted(versions)) or '?'}), run right before each float32 "
        f"Wide ResNet configuration; {report.get('rounds', 1)} round(s), "
        "interleaved."
    ]


def _step_table(results: list[dict]) -> list[str]:
    rounds = _several_rounds(results)
    torch = any(r.get("torch") for r in results)
    header = [
        "mode",
        "precision",
        "batch",
        *(["round"] if rounds else []),
        "step ms (median)",
        "images/s",
        "GFLOP/s",
        "% of matmul",
        "traces",
        "RSS built MB",
        "RSS peak MB",
        "step extra MB",
        *(["PyTorch CE step ms"] if torch else []),
    ]
    rows = []
    for r in results:
        row = [r["mode"], r["precision"], str(r["batch_size"])]
        row += [str(r.get("round", 1))] if rounds else []
        row += [
            f"{1000 * r['median_step_seconds']:.1f}",
            f"{r['images_per_second']:.1f}",
            _number(r.get("gflops"), ".1f"),
            _percent_of_matmul(r.get("gflops"), r),
            str(r["traces"]),
            f"{r['peak_rss_build_mb']:.0f}",
            f"{r['peak_rss_train_mb']:.0f}",
            f"{r['step_extra_rss_mb']:.0f}",
        ]
        if torch:
            ce_step = (r.get("torch") or {}).get("ce_step_s")
            row.append(_number(ce_step and 1000 * ce_step, ".1f"))
        rows.append(row)
    return table(header, rows)


def _sgld_table(chained: list[dict]) -> list[str]:
    """The SGLD chain of each jem configuration, timed alone."""
    rounds = _several_rounds(chained)
    torch = any(r.get("torch") for r in chained)
    header = [
        "precision",
        "batch",
        *(["round"] if rounds else []),
        "SGLD steps",
        "chain s (median)",
        "ms / SGLD step",
        "GFLOP/s",
        "% of matmul",
        *(["PyTorch chain s"] if torch else []),
    ]
    rows = []
    for r in chained:
        row = [r["precision"], str(r["batch_size"])]
        row += [str(r.get("round", 1))] if rounds else []
        step = r.get("sgld_step_seconds")
        row += [
            str(r["sgld_steps"]),
            f"{r['sgld_chain_seconds']:.2f}",
            _number(step and 1000 * step, ".1f"),
            _number(r.get("sgld_chain_gflops"), ".1f"),
            _percent_of_matmul(r.get("sgld_chain_gflops"), r),
        ]
        if torch:
            row.append(_number((r.get("torch") or {}).get("sgld_chain_s"), ".2f"))
        rows.append(row)
    return table(header, rows)


def _evaluation_table(evaluated: list[dict]) -> list[str]:
    header = ["precision", "eval images/s (logits + log p(x))", "PGD ms / iteration"]
    rows = [
        (
            f"{r['precision']} (batch {r['batch_size']})",
            f"{r['eval']['images_per_second']:.1f}" if r["eval"] else "—",
            f"{1000 * r['pgd']['iteration_seconds']:.1f}" if r["pgd"] else "—",
        )
        for r in evaluated
    ]
    return table(header, rows)


def _epoch_line(epoch: dict) -> str:
    return (
        f"Epoch check ({epoch['dataset']}): hdge-train epochs "
        f"{_seconds_list(epoch['epoch_seconds'])} s, median "
        f"after the first {epoch['median_epoch_seconds']:.2f} s vs "
        f"{epoch['steps_per_epoch']} back-to-back steps on a fixed batch "
        f"{_seconds_list(epoch['pure_epoch_seconds'])} s, "
        f"median {epoch['expected_epoch_seconds']:.2f} s (median step "
        f"{1000 * epoch['median_step_seconds']:.1f} ms); traces per epoch "
        f"{epoch['epoch_traces']}."
    )


def _autotune_table(autotuned: list[dict]) -> list[str]:
    header = [
        "tf.data autotune",
        "mnist5k fit epochs (s)",
        "fit returns after (s; iterator deleted)",
    ]
    rows = [
        (
            "on" if r["autotune"] else "off",
            _seconds_list(r["epoch_seconds"]),
            f"{r['fit_return_seconds']:.2f}",
        )
        for r in autotuned
    ]
    return table(header, rows)


def _check_value(check: dict) -> str:
    if len(check.get("values", ())) < 2:
        return f"{check['value']:.3f}"
    return f"{check['value']:.3f} ({check['min']:.3f}–{check['max']:.3f})"


def _checks_table(checks: list[dict]) -> list[str]:
    rounds = max((len(c.get("values", ())) for c in checks), default=0)
    value = f"value (mean, min–max of {rounds} rounds)" if rounds > 1 else "value"
    header = ["check", "settings", value, "target", "result"]
    rows = [
        (c["check"], c["settings"], _check_value(c), _target(c), _VERDICT[c["passed"]])
        for c in checks
    ]
    return table(header, rows)


def _recipe_table(recipes: dict) -> list[str]:
    """Each recipe's training epoch against the first one's, per round."""
    names = list(recipes["recipes"])
    rows = []
    for name in names:
        seconds = recipes["recipes"][name]["epoch_seconds"]
        ratios = recipes["ratios"][name]
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        rows.append(
            [
                name,
                f"{statistics.mean(seconds):.2f} ({_seconds_list(seconds)})",
                f"{statistics.mean(ratios):.2f}x{spread}",
            ]
        )
    return [
        f"Recipes: a training epoch of each, {recipes['rounds']} interleaved "
        f"round(s), the median of {recipes['epochs'] - 1} epoch(s) after the first; "
        f"against {names[0]}.",
        "",
        *table(["recipe", "epoch s: mean (rounds)", "ratio (min-max)"], rows),
    ]


def format_report(report: dict) -> str:
    """Markdown tables: training steps, SGLD chains, evaluation and PGD, epoch,
    autotuning, checks (a part that was not measured is left out)."""
    results = report["configurations"]
    lines = _setting_line(report) if results else []
    lines += _step_table(results)
    chained = [r for r in results if r.get("sgld_chain_seconds") is not None]
    if chained:
        lines += ["", *_sgld_table(chained)]
    evaluated = [r for r in results if r["eval"] or r["pgd"]]
    if evaluated:
        lines += ["", *_evaluation_table(evaluated)]
    if report.get("epoch"):
        lines += ["", _epoch_line(report["epoch"])]
    if report.get("autotune"):
        lines += ["", *_autotune_table(report["autotune"])]
    if report.get("recipes"):
        lines += ["", *_recipe_table(report["recipes"])]
    if report["checks"]:
        lines += ["", *_checks_table(report["checks"])]
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> None:
    """Everything measured, as JSON (`format_report` reads it back)."""
    path = Path(path)
    if path.parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
