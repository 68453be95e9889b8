"""Run every benchmark and collect the headline ratios in benchmarks/results.json.

Run: python benchmarks/run_all.py [--quick]

Each benchmark runs as its own process, so that one benchmark's threads and
memory do not affect the next, and writes its full JSON next to this file.
results.json keeps one entry per headline ratio with the sizes and repeat
count it was measured on, plus the machine and library versions.
``--quick`` uses fewer repeats, for checking that the scripts run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import usable_cpus, write_json

HERE = Path(__file__).resolve().parent

# name -> (script, normal arguments, quick arguments)
BENCHMARKS = {
    "ensemble": ("ensemble.py", ["--repeats", "3"], ["--repeats", "1", "--epochs", "1"]),
    "ensemble_all_cores": (
        "ensemble.py",
        ["--repeats", "3", "--threads", str(usable_cpus())],
        ["--repeats", "1", "--epochs", "1", "--threads", str(usable_cpus())],
    ),
    "fisher": ("fisher.py", ["--repeats", "3"], ["--repeats", "1"]),
    "pruning": ("pruning.py", ["--repeats", "3"], ["--repeats", "1"]),
    "flops": ("flops.py", ["--repeats", "5"], ["--repeats", "1"]),
    "ising_data": ("ising_data.py", ["--repeats", "5"], ["--repeats", "1"]),
}


def run(name: str, quick: bool) -> dict:
    """Run one benchmark script and return the JSON it wrote."""
    script, normal, fast = BENCHMARKS[name]
    out = HERE / f"{name}.json"
    command = [sys.executable, str(HERE / script), "--out", str(out)]
    command += fast if quick else normal
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def headline(results: dict) -> dict:
    """Pick each headline ratio with the sizes and repeats behind it."""
    ensemble, fisher, pruning, flops = (
        results[name] for name in ("ensemble", "fisher", "pruning", "flops")
    )
    return {
        "ensemble_speedup": {
            "value": ensemble["speedup_vs_plain"],
            "vs_groklab_single_runs": ensemble["speedup_vs_single"],
            "measured_on": ensemble["setup"],
            "all_cores": {
                "value": results["ensemble_all_cores"]["speedup_vs_plain"],
                "vs_groklab_single_runs": results["ensemble_all_cores"]["speedup_vs_single"],
                "measured_on": results["ensemble_all_cores"]["setup"],
            },
        },
        "fisher_speedup": {
            "value": fisher["speedup"],
            "per_model": fisher["speedups"],
            "measured_on": _sizes(fisher),
        },
        "pruning_speedup": {
            "value": pruning["speedup"],
            "per_model": pruning["speedups"],
            "measured_on": _sizes(pruning),
        },
        "flops_fraction": {
            "value": flops["ensemble"]["fraction"],
            "single_model": flops["single"]["fraction"],
            "matmul_flops_per_s": flops["matmul"]["flops_per_s"],
            "measured_on": flops["setup"],
        },
        "ising_data_samples_per_s": {
            "value": results["ising_data"]["samples_per_second_median"],
            "measured_on": {"n_samples": results["ising_data"]["n_samples"],
                            "repeats": results["ising_data"]["repeats"]},
        },
    }


def _sizes(result: dict) -> dict:
    """Return the per-model sizes and repeats of a pruning or Fisher result."""
    skip = {"speedup", "speedups", "machine", "versions"}
    return {
        model: {k: v for k, v in entry.items() if not isinstance(v, dict)}
        for model, entry in result.items()
        if model not in skip and isinstance(entry, dict)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repeat each, to check that the scripts run")
    parser.add_argument("--out", type=Path, default=HERE / "results.json",
                        help="summary JSON (benchmarks/results.json)")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {name: run(name, args.quick) for name in BENCHMARKS}
    summary = headline(results)
    summary["quick"] = args.quick
    summary["wall_s"] = time.perf_counter() - start
    for key in ("ensemble_speedup", "fisher_speedup", "pruning_speedup"):
        print(f"{key:18s} {summary[key]['value']:7.2f}x")
    print(f"{'flops_fraction':18s} {summary['flops_fraction']['value']:7.1%}")
    write_json(args.out, summary)


if __name__ == "__main__":
    main()
