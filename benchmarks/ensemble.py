"""Time a 10-seed modular-addition ensemble against 10 sequential runs.

Run: python benchmarks/ensemble.py [--members 10] [--epochs 3] [--repeats 3]

Three ways to train the same number of model-epochs of the default
modular-addition setup (P = 113, hidden 512, batch 64, Adam), each with the
same number of PyTorch threads:

- plain: a plain PyTorch script with one-hot inputs and ``nn.Sequential``,
  evaluating train and test loss and accuracy after every epoch, run once
  per seed;
- single: ``groklab train`` for each seed in turn, writing its run folder;
- ensemble: ``train_ensemble`` with all seeds stacked, writing every
  member's run folder.

Checkpoints are limited to the first and last epoch so that disk writes do
not dominate. The result is the time per model-epoch and two throughput
ratios: ensemble over plain and ensemble over single.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from common import summary, time_call, write_json
from groklab.config import Regime, RunConfig, Task
from groklab.tasks.loader import load_task
from groklab.training.ensemble import train_ensemble
from groklab.training.loop import train


def base_config(epochs: int, threads: int) -> RunConfig:
    """Return the default grokking config with checkpoints only at the ends."""
    return RunConfig(
        task=Task.MODADD,
        regime=Regime.GROK,
        epochs=epochs,
        checkpoint_dense_until=0,
        checkpoint_every=epochs,
        checkpoint_log_points=0,
        threads=threads,
    )


def plain_run(config: RunConfig, data) -> None:
    """Train one model the way a plain PyTorch script would, with one-hot inputs."""
    torch.manual_seed(config.seed)
    p = config.p
    model = nn.Sequential(
        nn.Linear(2 * p, config.hidden), nn.ReLU(), nn.Linear(config.hidden, p)
    )
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(config.alpha)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def one_hot(pairs: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(pairs, p).float().flatten(1)

    train_x, train_y = one_hot(data.train_inputs), data.train_targets
    test_x, test_y = one_hot(data.test_inputs), data.test_targets
    generator = torch.Generator().manual_seed(config.seed + 1)
    for _ in range(config.epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            for x, y in ((train_x, train_y), (test_x, test_y)):
                logits = model(x)
                float(nn.functional.cross_entropy(logits, y))
                float((logits.argmax(-1) == y).float().mean())


def measure(members: int, epochs: int, repeats: int, threads: int) -> dict:
    """Time the three sides and return their medians and ratios."""
    torch.set_num_threads(threads)
    config = base_config(epochs, threads)
    seeds = [dataclasses.replace(config, seed=s) for s in range(members)]
    data = load_task(config, progress=False)
    scratch = Path(tempfile.mkdtemp(prefix="groklab-bench-"))
    try:
        def plain() -> None:
            for seed_config in seeds:
                plain_run(seed_config, data)

        def single() -> None:
            for seed_config in seeds:
                train(seed_config, scratch / f"single{seed_config.seed}", force=True,
                      progress=False)

        def ensemble() -> None:
            dirs = [scratch / f"member{c.seed}" for c in seeds]
            outcomes = train_ensemble(seeds, dirs, force=True, progress=False)
            failed = [o for o in outcomes if o.state != "finished"]
            if failed:
                raise RuntimeError(f"ensemble member failed: {failed[0]}")

        sides = {}
        for name, fn in (("plain", plain), ("single", single), ("ensemble", ensemble)):
            seconds = time_call(fn, repeats, warmup=1)
            sides[name] = summary(seconds)
            per = statistics.median(seconds) / (members * epochs)
            sides[name]["seconds_per_model_epoch"] = per
            print(f"{name:9s} {per * 1e3:8.1f} ms per model-epoch "
                  f"(median of {repeats})", flush=True)
            torch.set_num_threads(threads)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ensemble_median = sides["ensemble"]["median_s"]
    return {
        "setup": {"task": "modadd", "p": config.p, "hidden": config.hidden,
                  "batch_size": config.batch_size, "members": members,
                  "epochs": epochs, "threads": threads, "repeats": repeats,
                  "n_train": len(data.train_inputs), "n_test": len(data.test_inputs)},
        "sides": sides,
        "speedup_vs_plain": sides["plain"]["median_s"] / ensemble_median,
        "speedup_vs_single": sides["single"]["median_s"] / ensemble_median,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10, help="seeds (10)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads for every side (1, as groklab trains)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ensemble.json"),
                        help="JSON output (benchmarks/ensemble.json)")
    args = parser.parse_args()
    for name in ("members", "epochs", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} is invalid: use an integer >= 1")
    start = time.perf_counter()
    result = measure(args.members, args.epochs, args.repeats, args.threads)
    print(f"ensemble speedup: {result['speedup_vs_plain']:.2f}x over plain PyTorch runs, "
          f"{result['speedup_vs_single']:.2f}x over groklab single runs")
    result["wall_s"] = time.perf_counter() - start
    write_json(args.out, result)


if __name__ == "__main__":
    main()
