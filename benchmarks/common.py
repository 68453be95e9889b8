"""Timing, machine facts and JSON output shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from groklab.training.runfolder import versions


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return seconds each."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds: list[float]) -> dict[str, Any]:
    """Return the median, min, max and every timing of one side of a comparison."""
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "all_s": seconds,
    }


def matmul_flops(threads: int, size: int = 2048, repeats: int = 7) -> dict[str, Any]:
    """Measure dense float32 matmul FLOP/s, the practical compute limit of this CPU.

    One ``size`` x ``size`` product costs 2 size^3 FLOPs. The median of
    ``repeats`` products is used, with ``threads`` PyTorch threads.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size)
        b = torch.randn(size, size)
        seconds = time_call(lambda: a @ b, repeats, warmup=2)
    finally:
        torch.set_num_threads(previous)
    flops = 2.0 * size**3
    return {
        "size": size,
        "threads": threads,
        "repeats": repeats,
        "flops_per_s": flops / statistics.median(seconds),
        **summary(seconds),
    }


def usable_cpus() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """Return the facts about this machine that a benchmark number depends on."""
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "torch_threads_default": torch.get_num_threads(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write one benchmark's result with the machine and library versions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {**result, "machine": machine(), "versions": versions()}
    path.write_text(json.dumps(full, indent=2) + "\n")
    print(f"wrote {path}")
