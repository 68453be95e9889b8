"""Failed runs: the failure is recorded, and analyses reject them unless asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import groklab.training.loop as loop
from cli_assertions import assert_one_line_error
from groklab.cli import main

# Dense checkpoints up to epoch 8, so a crash in epoch 6 leaves checkpoints 0-5.
TINY = ["--set", "p=11", "--set", "hidden=16", "--set", "checkpoint_dense_until=8",
        "--set", "checkpoint_log_points=0"]
FAST_ANALYSIS = [
    "--set", "fisher_inputs=24", "--set", "geometry_fisher_inputs=8",
    "--set", "n_fractions=11", "--set", "max_checkpoints=4",
    "--set", "pruning_checkpoints=0",
]


def crashed_run(tmp_path: Path, monkeypatch, crash_epoch: int = 6) -> Path:
    """Train a tiny run whose epoch ``crash_epoch`` raises, as a crashed job would."""
    original = loop.train_epoch
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_epoch:
            raise RuntimeError("simulated hardware fault")
        original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", crashing)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated hardware fault"):
        main(["train", "--task", "modadd", "--regime", "grok", "--epochs", "8",
              "--out", str(out), "--quiet", *TINY])
    monkeypatch.undo()
    return out


def test_analyze_rejects_failed_run(tmp_path, monkeypatch, capsys):
    run = crashed_run(tmp_path, monkeypatch)
    code = main(["analyze", str(run), "--quiet"])
    message = assert_one_line_error(capsys, code, "is failed, not finished")
    assert "--allow-failed" in message
    assert "simulated hardware fault" in message
    assert not (run / "analysis.json").exists()


def test_analyze_allow_failed_stops_at_failure(tmp_path, monkeypatch, capsys):
    run = crashed_run(tmp_path, monkeypatch)
    code = main(["analyze", str(run), "--quiet", "--allow-failed", *FAST_ANALYSIS])
    assert code == 0, capsys.readouterr().err
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["run_status"]["state"] == "failed"
    assert "simulated hardware fault" in analysis["run_status"]["message"]
    assert analysis["final_checkpoint_epoch"] == 5
    assert analysis["final"]["epoch"] == 5


def test_interrupted_run_suggests_resume(tmp_path, monkeypatch, capsys):
    run = crashed_run(tmp_path, monkeypatch)
    status = json.loads((run / "status.json").read_text())
    status.update(state="interrupted", message="interrupted by the user")
    (run / "status.json").write_text(json.dumps(status))
    code = main(["analyze", str(run), "--quiet", "--allow-failed"])
    message = assert_one_line_error(capsys, code, "is interrupted, not finished")
    assert f"groklab train --resume {run}" in message


def test_compare_allow_failed_lists_run(tmp_path, monkeypatch, capsys):
    failed = crashed_run(tmp_path, monkeypatch)
    steady = tmp_path / "steady"
    assert main(["train", "--task", "modadd", "--regime", "steady", "--epochs", "8",
                 "--out", str(steady), "--quiet", *TINY]) == 0
    capsys.readouterr()
    report = tmp_path / "report"
    code = main(["compare", str(failed), str(steady), "--out", str(report), "--quiet",
                 *FAST_ANALYSIS])
    assert_one_line_error(capsys, code, "is failed, not finished")
    assert not (report / "report.html").exists()

    code = main(["compare", str(failed), str(steady), "--out", str(report), "--quiet",
                 "--allow-failed", *FAST_ANALYSIS])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((report / "summary.json").read_text())
    assert list(summary["failed_runs"]) == ["modadd-grok-a10-s0"]
    assert summary["failed_runs"]["modadd-grok-a10-s0"]["state"] == "failed"
    page = (report / "report.html").read_text()
    assert 'id="failed-runs"' in page
    assert "simulated hardware fault" in page


@pytest.mark.parametrize(
    "setting, epoch, cause",
    [
        ("alpha=1e30", 0, "Likely cause: alpha 1e+30 scales the initial parameters"),
        ("lr=1e30", 1, "Likely cause: the learning rate (lr 1e+30) is too large for alpha"),
    ],
)
def test_divergence_names_epoch_and_cause(tmp_path, capsys, setting, epoch, cause):
    out = tmp_path / "run"
    code = main(["train", "--task", "modadd", "--regime", "grok", "--epochs", "3",
                 "--out", str(out), "--quiet", "--set", setting, *TINY])
    err = capsys.readouterr().err
    assert code == 1
    assert f"training diverged at epoch {epoch}" in err
    assert cause in err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed"
    assert status["epoch"] == epoch
    assert cause in status["message"]
    assert (out / "config.json").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + epoch + 1


def test_cause_of_loss_overflow():
    from groklab.config import RunConfig
    from groklab.training.records import likely_cause

    config = RunConfig(task="modadd", regime="grok", alpha=1e6)
    row = {"epoch": 7, "train/loss": float("inf"), "param_norm": 3.5e8}
    cause = likely_cause(row, config)
    assert cause.startswith("alpha 1e+06 is too large for the learning rate (lr 0.005)")
    assert "norm 3.5e+08" in cause
