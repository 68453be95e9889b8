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
        "folder: config.json, metrics.csv, checkpoints/ (safetensors). With --resume, "
        "continue an unfinished run folder from its last checkpoint instead.",
    )
    p.add_argument("--task", metavar="{modadd,ising}", help="task to train on (required "
                   "unless --resume)")
    p.add_argument("--regime", metavar="{grok,steady}", help="training path (required "
                   "unless --resume)")
    p.add_argument("--alpha", type=float, help="initial parameter scale (regime default)")
    p.add_argument("--epochs", type=int, help="training epochs (task default)")
    p.add_argument("--seed", type=int, help="initialisation and data-order seed (0)")
    p.add_argument("--out", type=Path, help="run folder (default runs/NAME-TIME)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue this run folder with the config in its config.json; "
                   "a finished run is left as it is. Other options must match that config")
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
    _allow_failed_option(p)
    _cache_option(p)
    _set_option(p, ", ".join(AnalysisConfig.__dataclass_fields__))
    _quiet_option(p)


def _allow_failed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-failed", action="store_true",
        help="analyse runs marked failed (diverged or crashed) up to their last "
        "checkpoint instead of rejecting them; analysis.json records the failure",
    )


def _compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="write a side-by-side report of grokking and steady runs",
        description="Compare grokking runs with steady runs of the same task, one or "
        "more seeds per regime, on one or both tasks. Analyses runs that lack an "
        "analysis first. Writes report.html (self-contained; figures and tables show "
        "the lowest seed of each regime), summary.json and claims.json (verdicts on "
        "six claims from every seed; see docs/claims.md) into --out.",
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="GROK_RUN STEADY_RUN [more run folders: other seeds or tasks]")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--force", action="store_true",
                   help="replace report.html, summary.json and claims.json in an "
                   "existing --out")
    _allow_failed_option(p)
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


def _job_options(parser: argparse.ArgumentParser) -> None:
    """Add the analysis overrides and the options that choose where jobs run."""
    from groklab.sweep.backends import BACKENDS

    parser.add_argument("--analysis-set", dest="analysis_overrides", action="append",
                        default=[], metavar="KEY=VALUE",
                        help="override an analysis setting; repeatable. Keys: "
                        + ", ".join(AnalysisConfig.__dataclass_fields__))
    parser.add_argument("--backend", default="local", choices=BACKENDS,
                        help="where jobs run: local processes or a Ray cluster "
                        "(default local)")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster address, e.g. 127.0.0.1:6379 (default: "
                        "$RAY_ADDRESS, else a new local Ray instance)")
    parser.add_argument("--workers", type=int,
                        help="parallel jobs (local default: the CPUs available to this "
                        "process; Ray default: as many as the cluster runs)")
    parser.add_argument("--max-members", type=int, default=10, metavar="M",
                        help="max runs trained together in one ensemble (default 10)")


def _sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train and analyse a grid of runs over config values and seeds",
        description="Train every combination of the --grid values for every seed, "
        "packing compatible runs into ensembles, analyse the finished runs and write "
        "results.csv, sweep.json, runs/ and figures/ into --out. Finished runs and "
        "up-to-date analyses are reused; unfinished runs are resumed.",
    )
    p.add_argument("--task", required=True, metavar="{modadd,ising}", help="task to train on")
    p.add_argument("--regime", metavar="{grok,steady}",
                   help="regime whose defaults (alpha unless swept) the runs take; "
                   "default grok. Sweep both with --grid regime=grok,steady")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="run config field and the values to sweep; repeat for a "
                   "Cartesian product, e.g. --grid alpha=0.1,1,10")
    p.add_argument("--seeds", default="0", metavar="SEEDS",
                   help="seeds of every grid point: N, A-B (inclusive) or a comma list "
                   "such as 0,2,5 (default 0)")
    _set_option(p, ", ".join(RunConfig.__dataclass_fields__))
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="sweep folder")
    _job_options(p)
    p.add_argument("--force", action="store_true",
                   help="run in a folder that contains another sweep, and replace run "
                   "folders whose config differs")
    p.add_argument("--no-analysis", action="store_true",
                   help="train only; the table then shows analyses that are already up "
                   "to date")
    p.add_argument("--cache-dir", type=Path, help="Ising dataset cache (~/.cache/groklab)")
    _quiet_option(p)


def _reproduce_parser(sub) -> None:
    from groklab.study.config import SCALES, StudyConfig

    p = sub.add_parser(
        "reproduce",
        help="run the whole study and give a verdict on each claim",
        description="Train seeds of both regimes and an alpha sweep on both tasks, "
        "analyse them, test the six claims and write report.html, claims.json, "
        "sensitivity.json and trajectories.json into --out. quick takes about an hour "
        "on a 2-core laptop; paper uses the published settings and takes "
        "hours (use --backend ray on a cluster). Re-running the same command resumes.",
    )
    p.add_argument("--scale", default="quick", choices=list(SCALES),
                   help="preset of seeds, epochs and alphas (default quick)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="study folder")
    _set_option(p, ", ".join(f for f in StudyConfig.__dataclass_fields__ if f != "scale"))
    _job_options(p)
    p.add_argument("--force", action="store_true",
                   help="replace a study with other settings in --out")
    p.add_argument("--cache-dir", type=Path, help="Ising dataset cache (~/.cache/groklab)")
    _quiet_option(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="groklab",
        description="Grokking versus steady learning: train, analyse, compare.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_train_parser, _analyze_parser, _compare_parser, _demo_parser,
                _reproduce_parser, _sweep_parser, _ising_data_parser,
                _ising_import_parser):
        add(sub)
    return parser


def _run_train(args) -> None:
    from groklab.training.loop import train

    if args.resume is not None:
        _resume_train(args)
        return
    for flag in ("task", "regime"):
        if getattr(args, flag) is None:
            raise ConfigError(
                f"the following arguments are required: --{flag} (or --resume RUN_DIR)"
            )
    for pair in args.overrides:
        if pair.partition("=")[0].strip() in ("task", "regime"):
            raise ConfigError(
                f"invalid override {pair!r}: set the task and regime with --task and "
                "--regime"
            )
    config = apply_overrides(RunConfig, _train_base(args), args.overrides)
    out = args.out or Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
    train(config, out, cache_dir=args.cache_dir, force=args.force, progress=not args.quiet)
    print(f"run folder: {out}")


def _train_base(args) -> dict:
    """Return the config fields set by train's own options."""
    base = {key: getattr(args, key) for key in ("task", "regime")
            if getattr(args, key) is not None}
    for key in ("alpha", "epochs", "seed"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    return base


def _resume_train(args) -> None:
    """Continue ``args.resume`` with its stored config; other options must match it."""
    from groklab.training.loop import train
    from groklab.training.runfolder import RunFolderError, read_config

    for flag in ("out", "force"):
        if getattr(args, flag):
            raise ConfigError(
                f"--{flag} cannot be combined with --resume: resume continues the run "
                f"folder {args.resume} in place"
            )
    if args.resume.exists() and not args.resume.is_dir():
        raise RunFolderError(
            f"{args.resume} is a file, not a run folder: pass a folder written by "
            "groklab train"
        )
    if not args.resume.is_dir():
        raise RunFolderError(
            f"run folder {args.resume} not found: pass a folder written by groklab train"
        )
    # config.json alone: a run stopped before its first epoch may lack the rest.
    _, stored = read_config(args.resume)
    requested = apply_overrides(
        RunConfig, {**stored.to_dict(), **_train_base(args)}, args.overrides
    )
    for key, value in requested.to_dict().items():
        if value != stored.to_dict()[key]:
            raise ConfigError(
                f"{key} {value!r} differs from {stored.to_dict()[key]!r} in "
                f"{args.resume / 'config.json'}: --resume continues the stored config, "
                "so drop the option or train a new run"
            )
    train(stored, args.resume, cache_dir=args.cache_dir, progress=not args.quiet,
          resume=True)
    print(f"run folder: {args.resume}")


def _run_analyze(args) -> None:
    from groklab.analysis.run import analyze_run

    config = apply_overrides(AnalysisConfig, {}, args.overrides)
    analyze_run(args.run_dir, config, progress=not args.quiet, cache_dir=args.cache_dir,
                allow_failed=args.allow_failed)
    print(f"analysis: {args.run_dir / 'analysis.json'}")


def _run_compare(args) -> None:
    from groklab.report.compare import compare_runs

    config = apply_overrides(AnalysisConfig, {}, args.overrides)
    report = compare_runs(args.runs, args.out, config, progress=not args.quiet,
                          force=args.force, cache_dir=args.cache_dir,
                          allow_failed=args.allow_failed)
    print(f"report: {report}")


def _run_sweep(args) -> int:
    from groklab.sweep import SweepOptions, SweepSpec, parse_grids, parse_seeds, run_sweep

    spec = SweepSpec(
        task=args.task,
        regime=args.regime,
        grid=parse_grids(args.grid),
        seeds=parse_seeds(args.seeds),
        overrides=args.overrides,
    )
    analysis_config = apply_overrides(AnalysisConfig, {}, args.analysis_overrides)
    options = SweepOptions(
        backend=args.backend,
        address=args.address,
        workers=args.workers,
        max_members=args.max_members,
        force=args.force,
        analysis=not args.no_analysis,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    result = run_sweep(spec, analysis_config, args.out, options)
    print(f"results: {result.table} ({len(result.rows)} runs)")
    for figure in result.figures:
        print(f"figure: {figure}")
    if result.unfinished_runs or result.failed_analyses:
        print(
            f"groklab sweep: {len(result.unfinished_runs)} run(s) not finished and "
            f"{len(result.failed_analyses)} analysis(es) failed; see the state and "
            f"analysis columns of {result.table}",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_reproduce(args) -> int:
    from groklab.study.config import study_config
    from groklab.study.run import StudyOptions, reproduce

    study = study_config(args.scale, args.overrides)
    config = apply_overrides(AnalysisConfig, {}, args.analysis_overrides)
    options = StudyOptions(
        backend=args.backend, address=args.address, workers=args.workers,
        max_members=args.max_members, force=args.force, cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    result = reproduce(study, config, args.out, options)
    print(f"report: {result.report}")
    print(f"claims: {args.out / 'claims.json'}")
    for entry in result.claims:
        print(f"  claim {entry['number']} ({entry['task']}): {entry['verdict']}")
    if result.missing:
        print(f"groklab reproduce: {len(result.missing)} run(s) left out, not finished "
              "or not analysed; run the command again to resume them", file=sys.stderr)
        return 1
    return 0


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
    "reproduce": _run_reproduce,
    "sweep": _run_sweep,
    "ising-data": _run_ising_data,
    "ising-import": _run_ising_import,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors and --help
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        code = COMMANDS[args.command](args)
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
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
