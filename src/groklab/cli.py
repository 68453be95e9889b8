"""The ``groklab`` command line: parses arguments and dispatches, nothing more."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from groklab.config import AnalysisConfig, ConfigError, RunConfig, apply_overrides

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _set_option(parser: argparse.ArgumentParser, keys: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field; repeatable. Keys: {keys}",
    )


def _cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="Ising dataset cache (default: the training run's, else $GROKLAB_CACHE "
        "or ~/.cache/groklab)",
    )


def _quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="hide progress bars"
    )


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one model and write its run folder",
        description="Train one model by the grokking or steady path and write a run "
        "folder: config.json, metrics.csv, checkpoints/ (safetensors).",
    )
    p.add_argument("--task", required=True, metavar="{modadd,ising}", help="task to train on")
    p.add_argument("--regime", required=True, metavar="{grok,steady}", help="training path")
    p.add_argument("--alpha", type=float, help="initial parameter scale (regime default)")
    p.add_argument("--epochs", type=int, help="training epochs (task default)")
    p.add_argument("--seed", type=int, help="initialisation and data-order seed (0)")
    p.add_argument("--out", type=Path, help="run folder (default runs/NAME-TIME)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--cache-dir", type=Path, help="Ising dataset cache (~/.cache/groklab)")
    _set_option(p, ", ".join(RunConfig.__dataclass_fields__))
    _quiet_option(p)


def _analyze_parser(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse a finished run",
        description="Compute grokking times, features, Fisher diagonals, pruning curves "
        "and information geometry of a run; writes analysis.json and figures/.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder to analyse")
    _cache_option(p)
    _set_option(p, ", ".join(AnalysisConfig.__dataclass_fields__))
    _quiet_option(p)


def _compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="write a side-by-side report of grokking and steady runs",
        description="Compare a grokking run with a steady run of the same task (more "
        "pairs, of other tasks, may follow). Analyses missing runs first; writes "
        "report.html (self-contained) and summary.json into --out.",
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="GROK_RUN STEADY_RUN [more run folders]")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--force", action="store_true",
                   help="replace report.html and summary.json in an existing --out")
    _cache_option(p)
    _set_option(p, ", ".join(AnalysisConfig.__dataclass_fields__))
    _quiet_option(p)


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train, analyse and compare both regimes on both tasks",
        description="Run the whole study on quick defaults: grokking and steady runs "
        "on modular addition and Ising, their analyses and report.html. Finished runs "
        "in --out with the same config are reused.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder")
    p.add_argument("--force", action="store_true",
                   help="replace run folders whose config differs or that did not finish")
    p.add_argument("--cache-dir", type=Path, help="Ising dataset cache (~/.cache/groklab)")
    _quiet_option(p)


def _out_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="dataset file to write (.npz)")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --out"
    )


def _ising_data_parser(sub) -> None:
    from groklab.tasks.ising.dataset import IsingDataSpec

    p = sub.add_parser(
        "ising-data",
        help="sample an Ising dataset into an .npz file",
        description="Sample Ising configurations on a temperature grid (evenly spaced, "
        "plus extra points near Tc) and write them with their labels, energy, "
        "magnetisation and provenance to an .npz file that train accepts as "
        "--set ising_data_file=FILE.",
    )
    _out_file_options(p)
    _set_option(p, ", ".join(IsingDataSpec.__dataclass_fields__))
    _quiet_option(p)


def _ising_import_parser(sub) -> None:
    p = sub.add_parser(
        "ising-import",
        help="convert outside Ising data to groklab's .npz",
        description="Convert an .npz (arrays spins, temperature, optional label) or a "
        "pickled list of (configuration, phase_label, temperature) tuples into "
        "groklab's dataset file. Spins must be -1/+1; energy and magnetisation are "
        "recomputed and inverted labels (1 = ordered) are converted.",
    )
    p.add_argument(
        "source", type=Path, metavar="SRC", help=".npz or pickle file to read"
    )
    _out_file_options(p)
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow reading a pickle, which runs code stored in the file; "
                   "pass it only for files from a source you trust")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="groklab",
        description="Grokking versus steady learning: train, analyse, compare.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_train_parser, _analyze_parser, _compare_parser, _demo_parser,
                _ising_data_parser, _ising_import_parser):
        add(sub)
    return parser


def _run_train(args) -> None:
    from groklab.training.loop import train

    for pair in args.overrides:
        if pair.partition("=")[0].strip() in ("task", "regime"):
            raise ConfigError(
                f"invalid override {pair!r}: set the task and regime with --task and "
                "--regime"
            )
    base = {"task": args.task, "regime": args.regime}
    for key in ("alpha", "epochs", "seed"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    config = apply_overrides(RunConfig, base, args.overrides)
    out = args.out or Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
    train(config, out, cache_dir=args.cache_dir, force=args.force, progress=not args.quiet)
    print(f"run folder: {out}")


def _run_analyze(args) -> None:
    from groklab.analysis.run import analyze_run

    config = apply_overrides(AnalysisConfig, {}, args.overrides)
    analyze_run(args.run_dir, config, progress=not args.quiet, cache_dir=args.cache_dir)
    print(f"analysis: {args.run_dir / 'analysis.json'}")


def _run_compare(args) -> None:
    from groklab.report.compare import compare_runs

    config = apply_overrides(AnalysisConfig, {}, args.overrides)
    report = compare_runs(args.runs, args.out, config, progress=not args.quiet,
                          force=args.force, cache_dir=args.cache_dir)
    print(f"report: {report}")


def _run_demo(args) -> None:
    from groklab.demo import run_demo

    report = run_demo(args.out, force=args.force, cache_dir=args.cache_dir,
                      progress=not args.quiet)
    print(f"report: {report}")


def _check_out_file(out: Path, force: bool) -> None:
    """Raise a ValueError if writing ``out`` would replace a file without --force."""
    if out.is_dir():
        raise ValueError(
            f"--out {out} is a folder: name a file such as {out / 'ising.npz'}"
        )
    if out.exists() and not force:
        raise ValueError(f"--out {out} exists: pass --force to replace it or choose "
                         "another file")
    if not out.parent.is_dir():
        raise ValueError(f"folder {out.parent} of --out not found: create it first")


def _print_dataset_summary(dataset, out: Path, seconds: float, verb: str) -> None:
    from groklab.tasks.ising.dataset import dataset_sha256
    from groklab.tasks.loader import content_sha256

    n_disordered = int(dataset.label.sum())
    temperatures = np.unique(dataset.temperature)
    lattice = dataset.spins.shape[-1]
    print(f"dataset: {out}")
    print(f"samples: {len(dataset)} on {lattice} x {lattice} lattices")
    print(f"temperatures: {len(temperatures)} from {temperatures[0]:.4g} to "
          f"{temperatures[-1]:.4g}")
    print(f"class balance: {len(dataset) - n_disordered} ordered (label 0), "
          f"{n_disordered} disordered (label 1)")
    if "source" in dataset.metadata:
        convention = dataset.metadata["source"].get("label_convention")
        if convention == "inverted":
            print("labels: inverted in the source (1 = ordered), converted to 0 = ordered")
    print(f"{verb} seconds: {seconds:.2f}")
    print(f"SHA-256 of the file: {dataset_sha256(out)}")
    print(f"SHA-256 of the arrays (same for the same samples): {content_sha256(dataset)}")


def _run_ising_data(args) -> None:
    from groklab.tasks.ising.dataset import IsingDataSpec, build_dataset, save_dataset

    spec = apply_overrides(IsingDataSpec, {}, args.overrides)
    _check_out_file(args.out, args.force)
    start = time.perf_counter()
    dataset = build_dataset(spec, progress=not args.quiet)
    seconds = time.perf_counter() - start
    save_dataset(dataset, args.out)
    _print_dataset_summary(dataset, args.out, seconds, "build")


def _run_ising_import(args) -> None:
    from groklab.tasks.ising.dataset import save_dataset
    from groklab.tasks.ising.importer import import_dataset

    _check_out_file(args.out, args.force)
    start = time.perf_counter()
    dataset = import_dataset(args.source, trust_pickle=args.trust_pickle)
    seconds = time.perf_counter() - start
    save_dataset(dataset, args.out)
    _print_dataset_summary(dataset, args.out, seconds, "import")


COMMANDS = {
    "train": _run_train,
    "analyze": _run_analyze,
    "compare": _run_compare,
    "demo": _run_demo,
    "ising-data": _run_ising_data,
    "ising-import": _run_ising_import,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors and --help
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        COMMANDS[args.command](args)
    except ValueError as err:
        # Invalid input (config, run folder, checkpoint, dataset) arrives as a
        # ValueError subclass with a one-line message; set GROKLAB_DEBUG=1 to
        # see the traceback instead.
        if os.environ.get("GROKLAB_DEBUG"):
            raise
        print(f"groklab {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as err:
        # A diverged run has already been marked failed in its folder.
        if type(err).__name__ != "TrainingDiverged" or os.environ.get("GROKLAB_DEBUG"):
            raise
        print(f"groklab {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        # Files that cannot be written or read: a path through a file, a full
        # disk, missing permissions.
        if os.environ.get("GROKLAB_DEBUG"):
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"groklab {args.command}: error: cannot access{where}: {err.strerror or err}; "
              "check the path and its permissions", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"groklab {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
