"""A PyTorch yardstick run beside our configurations: the same Wide ResNet's CE
step (and SGLD chain) in PyTorch, timed on this host in the same minute.

The yardstick is a script outside the package (the project's is
torch_wrn_step.py in its shared tools), run by a Python interpreter that has torch;
torch is never a dependency of ours. It takes --depth --width --batch --threads
--classes --size --channels --repeats --warmup [--sgld=N] and prints one JSON line
with `ce_step_s` (median seconds of forward, backward, Adam) and, with --sgld,
`sgld_chain_s` (median seconds of N SGLD steps). Host speed drifts on a shared
machine, so `suite.run_benchmark` runs it immediately before each configuration
it applies to.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

from hdge_tf.bench.config import BenchConfig, TimingOptions, parse_network


@dataclasses.dataclass(frozen=True)
class TorchYardstick:
    """`script` run by `python`; both paths are checked here, before any timing."""

    python: str
    script: str

    def __post_init__(self):
        python, script = Path(self.python), Path(self.script)
        if not python.is_file() or not os.access(python, os.X_OK):
            raise FileNotFoundError(
                f"--torch_python={self.python} is not an executable Python: point it "
                "at the interpreter of a venv with torch (e.g. VENV/bin/python), or "
                "leave it empty to run without the PyTorch yardstick."
            )
        if not script.is_file():
            raise FileNotFoundError(
                f"--torch_yardstick={self.script} does not exist: pass the yardstick "
                "script's path (e.g. torch_wrn_step.py from the shared tools)."
            )

    @staticmethod
    def applies(config: BenchConfig) -> bool:
        """The yardstick is a float32 Wide ResNet (the published layout)."""
        return (
            config.precision == "float32" and parse_network(config.network)[0] == "wrn"
        )

    def arguments(self, config: BenchConfig, options: TimingOptions) -> list[str]:
        """The yardstick's flags for `config`: the same network, batch, classes,
        input and repeats, and as many threads as TF uses (every CPU)."""
        _, wrn = parse_network(config.network)
        height, width, channels = config.image_shape
        if height != width:
            raise ValueError(
                f"The PyTorch yardstick takes square images, got {config.image_shape}."
            )
        arguments = [
            f"--depth={wrn['depth']}",
            f"--width={wrn['width']}",
            f"--batch={config.batch_size}",
            f"--threads={os.cpu_count()}",
            f"--classes={config.num_classes}",
            f"--size={height}",
            f"--channels={channels}",
            f"--repeats={options.repeats}",
            f"--warmup={options.warmup}",
        ]
        if config.mode == "jem":
            arguments.append(f"--sgld={config.sgld_steps}")
        return arguments

    def run(self, config: BenchConfig, options: TimingOptions) -> dict:
        """The yardstick's JSON for `config`, with the `arguments` it ran with."""
        arguments = self.arguments(config, options)
        command = [self.python, self.script, *arguments]
        process = subprocess.run(command, capture_output=True, text=True)
        if process.returncode != 0:
            raise RuntimeError(
                f"The PyTorch yardstick failed (exit {process.returncode}): "
                f"{' '.join(command)}\n{process.stderr[-3000:]}"
            )
        lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError) as err:
            raise RuntimeError(
                f"The PyTorch yardstick printed no JSON line: {' '.join(command)}\n"
                f"stdout: {process.stdout[-1000:]}"
            ) from err
        needed = ["ce_step_s"] + (["sgld_chain_s"] if config.mode == "jem" else [])
        missing = [key for key in needed if key not in result]
        if missing:
            raise RuntimeError(
                f"The PyTorch yardstick's JSON lacks {missing}: {' '.join(command)}\n"
                f"{lines[-1]}"
            )
        return {**result, "arguments": arguments}
