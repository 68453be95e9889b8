"""The command line on tiny budgets, end to end, and every kind of bad input."""

import json
import subprocess
import sys

import pytest

from groklab.cli import main
from cli_assertions import assert_one_line_error

TINY_MODADD = ["--set", "p=11", "--set", "hidden=16", "--set", "checkpoint_every=1"]
TINY_ISING = [
    "--set", "ising_lattice=8", "--set", "ising_n_temperatures=6",
    "--set", "ising_samples_per_temperature=20", "--set", "ising_train=40",
    "--set", "ising_test=60", "--set", "hidden=10", "--set", "lr=1e-3",
]
TINY_ANALYSIS = [
    "--set", "fisher_inputs=24", "--set", "geometry_fisher_inputs=8",
    "--set", "n_fractions=11", "--set", "max_checkpoints=5",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "groklab", *args], capture_output=True, text=True, timeout=600
    )


def train_tiny(tmp_path, task, regime, epochs=4, extra=()):
    out = tmp_path / f"{task}-{regime}"
    tiny = TINY_MODADD if task == "modadd" else TINY_ISING
    code = main([
        "train", "--task", task, "--regime", regime, "--epochs", str(epochs),
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet",
        *tiny, *extra,
    ])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def modadd_pair(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("modadd")
    return train_tiny(tmp_path, "modadd", "grok"), train_tiny(tmp_path, "modadd", "steady")


def test_train_writes_run_folder(modadd_pair):
    grok, _ = modadd_pair
    config = json.loads((grok / "config.json").read_text())
    assert config["config"]["p"] == 11
    assert config["config"]["alpha"] == 10.0
    assert "torch" in config["provenance"]["versions"]
    rows = (grok / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,train/loss,train/acc,test/loss,test/acc,param_norm"
    assert len(rows) == 1 + 5
    names = sorted(p.name for p in (grok / "checkpoints").iterdir())
    assert names == [f"epoch_{e:07d}.safetensors" for e in range(5)]
    assert json.loads((grok / "status.json").read_text())["state"] == "finished"


def test_compare_end_to_end_both_tasks(tmp_path, modadd_pair):
    ising = [train_tiny(tmp_path, "ising", r, epochs=3) for r in ("grok", "steady")]
    result = run_cli("compare", *map(str, modadd_pair), *map(str, ising),
                     "--out", str(tmp_path / "report"), "--quiet", *TINY_ANALYSIS)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    required = ["epoch_train_fit", "epoch_test_fit", "final_train_acc", "final_test_acc",
                "compression_factor", "compression_definition", "fisher_form",
                "median_fisher_cosine", "config"]
    for task, feature_key in (("modadd", "key_frequencies"),
                              ("ising", "feature_correlations")):
        for regime in ("grok", "steady"):
            entry = summary[task][regime]
            for key in required + [feature_key]:
                assert key in entry, (task, regime, key)
            assert entry["config"]["regime"] == regime
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 16
    assert (modadd_pair[0] / "analysis.json").is_file()
    assert (modadd_pair[0] / "figures" / "pruning.pdf").is_file()


def test_help_on_every_command():
    for command in ([], ["train"], ["analyze"], ["compare"], ["demo"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0
        assert "usage: groklab" in result.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--task", "mnist", "--regime", "grok"], "unknown task 'mnist'"),
        (["--task", "modadd", "--regime", "fast"], "unknown regime 'fast'"),
        (["--task", "modadd", "--regime", "grok", "--alpha", "0"], "invalid alpha 0"),
        (["--task", "modadd", "--regime", "grok", "--alpha", "-1"], "invalid alpha -1"),
        (["--task", "modadd", "--regime", "grok", "--epochs", "0"], "invalid epochs 0"),
        (["--task", "modadd", "--regime", "grok", "--set", "p=1"], "invalid p 1"),
        (["--task", "modadd", "--regime", "grok", "--set", "p"], "expected KEY=VALUE"),
        (["--task", "modadd", "--regime", "grok", "--set", "x=1"], "unknown config key"),
        (["--task", "modadd", "--regime", "grok", "--set", "lr=x"], "invalid value 'x'"),
        (["--task", "modadd", "--regime", "grok", "--epochs", "ten"], "invalid int value"),
        (["--regime", "grok"], "required: --task"),
    ],
)
def test_train_bad_input(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    code = main(["train", *args, "--out", str(out), "--quiet"])
    assert_one_line_error(capsys, code, fragment)
    assert not out.exists()


def test_existing_run_folder_kept(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    args = ["train", "--task", "modadd", "--regime", "grok", "--out", str(out),
            "--epochs", "1", "--quiet", *TINY_MODADD]
    assert_one_line_error(capsys, main(args), "pass --force")
    assert (out / "keep.txt").read_text() == "precious"
    assert_one_line_error(capsys, main([*args, "--force"]), "not a groklab run folder")
    assert (out / "keep.txt").read_text() == "precious"


def test_force_replaces_only_valid_requests(tmp_path, capsys):
    run = train_tiny(tmp_path, "modadd", "grok", epochs=1)
    before = (run / "metrics.csv").read_text()
    args = ["train", "--task", "modadd", "--regime", "steady", "--out", str(run),
            "--epochs", "2", "--quiet", "--force", *TINY_MODADD]
    code = main([*args, "--set", "train_fraction=0.001"])
    assert_one_line_error(capsys, code, "invalid train_fraction")
    assert (run / "metrics.csv").read_text() == before
    assert main(args) == 0
    assert json.loads((run / "config.json").read_text())["config"]["regime"] == "steady"


def test_train_rejects_task_override(tmp_path, capsys):
    code = main(["train", "--task", "modadd", "--regime", "grok", "--set", "task=ising",
                 "--out", str(tmp_path / "r")])
    assert_one_line_error(capsys, code, "with --task and --regime")


def test_unwritable_out_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(["train", "--task", "modadd", "--regime", "grok", "--epochs", "1",
                 "--out", str(tmp_path / "afile" / "sub"), "--quiet", *TINY_MODADD])
    assert_one_line_error(capsys, code, "cannot access")


def test_diverged_run_marked_failed(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--task", "modadd", "--regime", "grok", "--epochs", "3",
                 "--out", str(out), "--quiet", "--set", "lr=1e30", *TINY_MODADD])
    err = capsys.readouterr().err
    assert code == 1
    assert "diverged" in err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed"
    assert "Lower the learning rate" in status["message"]
    code = main(["analyze", str(out), "--quiet"])
    assert_one_line_error(capsys, code, "is failed, not finished (training diverged")


def test_crashed_run_marked_failed(tmp_path, monkeypatch):
    import groklab.training.loop as loop

    def crash(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(loop, "train_epoch", crash)
    with pytest.raises(MemoryError):
        main(["train", "--task", "modadd", "--regime", "grok", "--epochs", "2",
              "--out", str(tmp_path / "r"), "--quiet", *TINY_MODADD])
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "failed"
    assert "MemoryError" in status["message"]


def test_analyze_missing_folder(tmp_path, capsys):
    code = main(["analyze", str(tmp_path / "nowhere")])
    assert_one_line_error(capsys, code, "not found")


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is corrupt"),
        (lambda d: (d / "config.json").unlink(), "config.json not found"),
        (lambda d: (d / "metrics.csv").write_text("epoch,train/loss\n1,"), "metrics.csv"),
        (lambda d: (d / "status.json").write_text('{"state": "running"}'), "not finished"),
        (lambda d: (d / "checkpoints" / "epoch_0000002.safetensors").write_bytes(b"\0" * 9),
         "corrupt or truncated"),
        (lambda d: (d / "config.json").write_text(
            '{"config": {"task": "modadd", "regime": "grok", "alpha": -3}}'),
         "invalid config.json"),
    ],
)
def test_analyze_corrupt_run_folder(tmp_path, capsys, damage, fragment):
    run = train_tiny(tmp_path, "modadd", "grok", epochs=2)
    damage(run)
    code = main(["analyze", str(run), "--quiet", *TINY_ANALYSIS])
    assert_one_line_error(capsys, code, fragment)
    assert not (run / "analysis.json").exists()


def test_compare_needs_both_regimes(capsys, modadd_pair, tmp_path):
    code = main(["compare", str(modadd_pair[0]), "--out", str(tmp_path / "r")])
    assert_one_line_error(capsys, code, "no modadd steady run given")


def test_compare_keeps_existing_report(tmp_path, capsys, modadd_pair):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").write_text("mine")
    code = main(["compare", *map(str, modadd_pair), "--out", str(out), "--quiet"])
    assert_one_line_error(capsys, code, "pass --force")
    assert (out / "report.html").read_text() == "mine"


def test_compare_rejects_different_data(tmp_path, capsys, modadd_pair):
    other = train_tiny(tmp_path, "modadd", "steady", extra=["--set", "data_seed=5"])
    code = main(["compare", str(modadd_pair[0]), str(other), "--out", str(tmp_path / "r")])
    assert_one_line_error(capsys, code, "differ in data_seed")


def test_bad_analysis_override(capsys, modadd_pair):
    code = main(["analyze", str(modadd_pair[0]), "--set", "fisher_form=empirical"])
    assert_one_line_error(capsys, code, "invalid fisher_form 'empirical'")


def test_analyze_rejects_changed_dataset(tmp_path, capsys):
    from groklab.tasks.ising.dataset import load_dataset, save_dataset

    run = train_tiny(tmp_path, "ising", "grok", epochs=2)
    (path,) = (tmp_path / "cache").glob("ising-*.npz")
    dataset = load_dataset(path)
    dataset.spins[0] *= -1
    dataset.magnetisation[0] *= -1
    save_dataset(dataset, path)
    code = main(["analyze", str(run), "--quiet", *TINY_ANALYSIS])
    assert_one_line_error(capsys, code, "differs from the one run")


def test_analyze_rebuilds_deleted_dataset(tmp_path):
    run = train_tiny(tmp_path, "ising", "grok", epochs=2)
    for path in (tmp_path / "cache").glob("ising-*.npz"):
        path.unlink()
    assert main(["analyze", str(run), "--quiet", *TINY_ANALYSIS]) == 0


def interrupt_after(monkeypatch, epochs):
    """Make training raise KeyboardInterrupt once ``epochs`` epochs have run."""
    import groklab.training.loop as loop

    original, calls = loop.train_epoch, []

    def train_epoch(*args, **kwargs):
        if len(calls) == epochs:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", train_epoch)


def test_train_resume_continues_interrupted_run(tmp_path, monkeypatch):
    reference = train_tiny(tmp_path, "modadd", "grok", epochs=6)
    out = tmp_path / "interrupted"
    interrupt_after(monkeypatch, 3)
    args = ["train", "--task", "modadd", "--regime", "grok", "--epochs", "6",
            "--out", str(out), "--quiet", *TINY_MODADD]
    assert main(args) == 130
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["resumed_from"]) == ("finished", 3)
    assert (out / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()


def test_train_resume_leaves_finished_run(tmp_path):
    run = train_tiny(tmp_path, "modadd", "grok", epochs=2)
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["train", "--resume", str(run), "--quiet", "--set", "p=11"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "lr=1e-3"], "lr 0.001 differs from 0.005"),
        (["--epochs", "9"], "epochs 9 differs from 2"),
        (["--task", "ising"], "task 'ising' differs from 'modadd'"),
        (["--out", "elsewhere"], "--out cannot be combined with --resume"),
        (["--force"], "--force cannot be combined with --resume"),
        (["--set", "lr"], "expected KEY=VALUE"),
    ],
)
def test_train_resume_bad_input(tmp_path, capsys, args, fragment):
    run = train_tiny(tmp_path, "modadd", "grok", epochs=2)
    before = (run / "metrics.csv").read_text()
    code = main(["train", "--resume", str(run), "--quiet", *args])
    assert_one_line_error(capsys, code, fragment)
    assert (run / "metrics.csv").read_text() == before
    assert not (tmp_path / "elsewhere").exists()


def test_train_resume_missing_folder(tmp_path, capsys):
    code = main(["train", "--resume", str(tmp_path / "nowhere")])
    assert_one_line_error(capsys, code, "not found")
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["train", "--resume", str(tmp_path / "notes.txt")])
    assert_one_line_error(capsys, code, "is a file, not a run folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_compare_writes_claims_for_several_seeds(tmp_path):
    runs = [
        train_tiny(tmp_path / f"s{seed}", "modadd", regime,
                   extra=["--seed", str(seed), "--set", "p=13"])
        for regime in ("grok", "steady") for seed in (0, 1)
    ]
    out = tmp_path / "report"
    code = main(["compare", *map(str, runs), "--out", str(out), "--quiet",
                 *TINY_ANALYSIS])
    assert code == 0
    entries = json.loads((out / "claims.json").read_text(), strict=True)
    assert sorted(e["number"] for e in entries) == [1, 2, 3, 4, 5, 6]
    for entry in entries:
        assert entry["verdict"] in {"supported", "not_supported", "inconclusive"}
    claim_1 = next(e for e in entries if e["number"] == 1)
    assert claim_1["n_seeds"] == {"grok": 2, "steady": 2}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modadd"]["grok"]["config"]["seed"] == 0
    assert summary["modadd"]["claim_runs"]["steady"] == [
        "modadd-steady-a0.1-s0", "modadd-steady-a0.1-s1"]
    html = (out / "report.html").read_text()
    assert '<table id="claims">' in html
    assert "Copy as CSV" in html
    assert '<figure id="modadd_pruning">' in html
    assert json.loads((runs[1] / "config.json").read_text())["config"]["p"] == 13
    assert (runs[0] / "figures" / "pruning.png").is_file()
    assert not (runs[1] / "figures").exists()


def test_compare_rejects_repeated_seed(tmp_path, capsys, modadd_pair):
    again = train_tiny(tmp_path, "modadd", "grok")
    code = main(["compare", *map(str, modadd_pair), str(again), "--out",
                 str(tmp_path / "r")])
    assert_one_line_error(capsys, code, "two modadd grok runs of seed 0 given")


def test_compare_rejects_seeds_of_other_settings(tmp_path, capsys, modadd_pair):
    other = train_tiny(tmp_path, "modadd", "grok",
                       extra=["--seed", "1", "--set", "lr=1e-3"])
    code = main(["compare", *map(str, modadd_pair), str(other), "--out",
                 str(tmp_path / "r")])
    assert_one_line_error(capsys, code, "differ in lr")
