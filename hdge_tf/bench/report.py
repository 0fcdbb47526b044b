"""The benchmark's report: markdown tables to print, the JSON file to keep."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from hdge_tf.markdown import table

_BF16_NOTE = {
    True: " with native bfloat16 (AMX/AVX512-BF16)",
    False: " without native bfloat16 (no AMX/AVX512-BF16: bf16 is emulated)",
}
_VERDICT = {True: "pass", False: "FAIL", None: "n/a"}


def _seconds_list(values: Iterable[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in values)


def _target(check: dict) -> str:
    if check["op"] is None:
        return "—"
    if check["op"] == "within":
        return f"1 ± {check['bound']:g}"
    return f"{check['op']} {check['bound']:g}"


def _setting_line(report: dict) -> list[str]:
    """What was measured where: network, input, classes, K, TF, CPUs."""
    first, env = report["configurations"][0], report["environment"]
    shape = "x".join(str(d) for d in first["image_shape"])
    return [
        f"Network {first['network']}, input {shape}, {first['num_classes']} "
        f"classes, K={first['queue_size']}; TF {env['tensorflow']}, "
        f"{env['cpus']} CPUs"
        + _BF16_NOTE.get(env.get("cpu_native_bf16"), "")
        + ("" if report["isolated"] else "; not isolated: RSS is cumulative"),
        "",
    ]


def _step_table(results: list[dict]) -> list[str]:
    header = [
        "mode",
        "precision",
        "batch",
        "step ms (median)",
        "images/s",
        "traces",
        "RSS built MB",
        "RSS peak MB",
        "step extra MB",
    ]
    rows = [
        (
            r["mode"],
            r["precision"],
            str(r["batch_size"]),
            f"{1000 * r['median_step_seconds']:.1f}",
            f"{r['images_per_second']:.1f}",
            str(r["traces"]),
            f"{r['peak_rss_build_mb']:.0f}",
            f"{r['peak_rss_train_mb']:.0f}",
            f"{r['step_extra_rss_mb']:.0f}",
        )
        for r in results
    ]
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


def _checks_table(checks: list[dict]) -> list[str]:
    header = ["check", "settings", "value", "target", "result"]
    rows = [
        (
            c["check"],
            c["settings"],
            f"{c['value']:.3f}",
            _target(c),
            _VERDICT[c["passed"]],
        )
        for c in checks
    ]
    return table(header, rows)


def format_report(report: dict) -> str:
    """Markdown tables: training steps, evaluation and PGD, epoch, autotuning,
    checks (a part that was not measured is left out)."""
    results = report["configurations"]
    lines = _setting_line(report) if results else []
    lines += _step_table(results)
    evaluated = [r for r in results if r["eval"] or r["pgd"]]
    if evaluated:
        lines += ["", *_evaluation_table(evaluated)]
    if report.get("epoch"):
        lines += ["", _epoch_line(report["epoch"])]
    if report.get("autotune"):
        lines += ["", *_autotune_table(report["autotune"])]
    if report["checks"]:
        lines += ["", *_checks_table(report["checks"])]
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> None:
    """Everything measured, as JSON (`format_report` reads it back)."""
    path = Path(path)
    if path.parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
