"""Time the default Ising dataset build: samples per second and total seconds.

Run: python benchmarks/ising_data.py [--repeats N] [--out FILE]
Prints the median of N builds (different seeds, so nothing is cached) and
writes the numbers with the machine and versions to a JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

from groklab.tasks.ising.dataset import IsingDataSpec, build_dataset
from groklab.training.runfolder import versions


def time_builds(repeats: int) -> list[float]:
    """Build the default dataset ``repeats`` times with fresh seeds; return seconds."""
    seconds = []
    for seed in range(repeats):
        spec = dataclasses.replace(IsingDataSpec(), seed=1000 + seed)
        start = time.perf_counter()
        build_dataset(spec, progress=False)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="builds to time (5)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ising_data.json"),
                        help="JSON output (benchmarks/ising_data.json)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats} is invalid: use an integer >= 1")

    spec = IsingDataSpec()
    n_samples = len(spec.temperatures()) * spec.samples_per_temperature
    seconds = time_builds(args.repeats)
    median = statistics.median(seconds)
    result = {
        "spec": spec.to_dict(),
        "n_samples": n_samples,
        "repeats": args.repeats,
        "build_seconds_median": median,
        "build_seconds_all": seconds,
        "samples_per_second_median": n_samples / median,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "versions": versions(),
    }
    print(f"default Ising dataset: {n_samples} samples, {len(spec.temperatures())} "
          f"temperatures, L = {spec.lattice}")
    print(f"build time: median {median:.2f} s over {args.repeats} builds "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f})")
    print(f"throughput: {n_samples / median:.0f} samples/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
