"""Achieved FLOP/s of training as a fraction of this machine's dense matmul FLOP/s.

Run: python benchmarks/flops.py [--members 10] [--repeats 5]

The FLOPs of one training epoch of the default modular-addition setup
(P = 113, hidden 512, batch 64) are counted with PyTorch's FlopCounterMode,
which counts matrix products and convolutions, forward and backward. The
epoch is then timed without the counter. The limit is the FLOP/s of a
2048 x 2048 float32 matmul with the same number of threads. Both the
stacked ensemble and a single model (groklab's training loop) are measured.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import matmul_flops, summary, time_call, write_json
from groklab.config import Regime, RunConfig, Task
from groklab.models import build_model
from groklab.tasks.loader import load_task
from groklab.training.ensemble import train_stacked_epoch
from groklab.training.loop import train_epoch
from groklab.training.stacked import stack_models
from groklab.training.stacked_adam import StackedAdam


def ensemble_epoch(configs: list[RunConfig], data):
    """Return a function that trains one epoch of the stacked configs."""
    model = stack_models([build_model(c) for c in configs])
    adam = StackedAdam(model.params, [c.lr for c in configs],
                       [c.weight_decay for c in configs])
    generators = [torch.Generator().manual_seed(c.seed + 1) for c in configs]
    return lambda: train_stacked_epoch(model, adam, data, configs[0].batch_size, generators)


def single_epoch(config: RunConfig, data):
    """Return a function that trains one epoch of one model with groklab's loop."""
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + 1)
    return lambda: train_epoch(model, optimizer, data, config.batch_size, generator)


def achieved(epoch_fn, repeats: int, limit: float) -> dict:
    """Count one epoch's FLOPs, time ``repeats`` epochs and compare with ``limit``."""
    counter = FlopCounterMode(display=False)
    with counter:
        epoch_fn()
    flops = counter.get_total_flops()
    seconds = time_call(epoch_fn, repeats, warmup=1)
    rate = flops / statistics.median(seconds)
    return {"flops_per_epoch": flops, "flops_per_s": rate, "fraction": rate / limit,
            **summary(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10, help="ensemble members (10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs (5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (1, as groklab trains)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/flops.json"),
                        help="JSON output (benchmarks/flops.json)")
    args = parser.parse_args()
    for name in ("members", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} is invalid: use an integer >= 1")
    torch.set_num_threads(args.threads)
    configs = [RunConfig(task=Task.MODADD, regime=Regime.GROK, seed=s, threads=args.threads)
               for s in range(args.members)]
    data = load_task(configs[0], progress=False)
    limit = matmul_flops(args.threads)
    print(f"dense matmul: {limit['flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"({args.threads} threads)")
    result = {"setup": {"task": "modadd", "p": configs[0].p, "hidden": configs[0].hidden,
                        "batch_size": configs[0].batch_size, "members": args.members,
                        "threads": args.threads, "repeats": args.repeats},
              "matmul": limit}
    for name, fn in (("ensemble", ensemble_epoch(configs, data)),
                     ("single", single_epoch(configs[0], data))):
        result[name] = achieved(fn, args.repeats, limit["flops_per_s"])
        print(f"{name:8s} {result[name]['flops_per_s'] / 1e9:6.1f} GFLOP/s = "
              f"{result[name]['fraction']:.1%} of matmul", flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
