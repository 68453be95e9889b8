"""``groklab sweep`` end to end on the local backend: table, reuse, resume, refusals."""

import csv
import json
import shutil
import sys

import pytest

from groklab.cli import main
from groklab.config import RunConfig
from groklab.training.ensemble import pack_configs
from cli_assertions import assert_one_line_error

TINY_SWEEP = [
    "--task", "modadd", "--grid", "alpha=0.3,3", "--seeds", "0-1",
    "--set", "p=13", "--set", "hidden=16", "--set", "epochs=6",
    "--set", "checkpoint_every=1",
    "--analysis-set", "fisher_inputs=24", "--analysis-set", "geometry_fisher_inputs=8",
    "--analysis-set", "n_fractions=21", "--analysis-set", "max_checkpoints=5",
    "--workers", "2", "--max-members", "2", "--quiet",
]
RUN_NAMES = ["alpha=0.3_seed0", "alpha=0.3_seed1", "alpha=3_seed0", "alpha=3_seed1"]


def sweep(out, *extra):
    return main(["sweep", *TINY_SWEEP, "--out", str(out), *extra])


def read_table(out):
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def file_times(out, names=RUN_NAMES):
    """Return the modification time of every file in the named run folders."""
    return {
        path.relative_to(out).as_posix(): path.stat().st_mtime_ns
        for name in names
        for path in (out / "runs" / name).rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    assert sweep(out) == 0
    return out


def copy_of(swept, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    return out


def test_pack_configs_groups_by_ensemble_key():
    configs = [RunConfig("modadd", "grok", alpha=a, seed=s, hidden=h)
               for h in (16, 32) for a in (0.3, 3.0) for s in (0, 1)]
    assert pack_configs(configs, 3) == [[0, 1, 2], [3], [4, 5, 6], [7]]


def test_sweep_writes_folder_layout(swept):
    record = json.loads((swept / "sweep.json").read_text())
    assert record["definition"]["grid"] == {"alpha": [0.3, 3.0]}
    assert record["definition"]["seeds"] == [0, 1]
    assert record["packs"] == [RUN_NAMES[:2], RUN_NAMES[2:]]
    assert record["backend"] == "local"
    assert "torch" in record["versions"]
    assert [r["name"] for r in record["runs"]] == RUN_NAMES
    for name in RUN_NAMES:
        assert (swept / "runs" / name / "analysis.json").is_file()
    assert (swept / "figures" / "sweep_alpha.png").is_file()
    assert (swept / "figures" / "sweep_alpha.pdf").is_file()


def test_sweep_table_rows(swept):
    rows = read_table(swept)
    assert [row["run"] for row in rows] == [f"runs/{n}" for n in RUN_NAMES]
    assert [(row["alpha"], row["seed"]) for row in rows] == [
        ("0.3", "0"), ("0.3", "1"), ("3.0", "0"), ("3.0", "1")]
    for row in rows:
        assert row["state"] == "finished"
        assert row["epoch"] == "6"
        assert row["analysis"] == "done"
        assert row["fisher_form"] == "regression"
        assert row["tolerance"] == "0.01"
        assert row["compression_factor_fisher"] != ""


def test_sweep_table_matches_run_folders(swept):
    for row in read_table(swept):
        analysis = json.loads((swept / row["run"] / "analysis.json").read_text())
        assert analysis["config"]["alpha"] == float(row["alpha"])
        assert analysis["config"]["seed"] == int(row["seed"])
        assert float(row["final_test_acc"]) == analysis["final"]["test/acc"]
        assert int(row["n_kept_magnitude"]) == (
            analysis["pruning"]["orders"]["magnitude"]["compression"]["n_kept"])
        median = analysis["geometry"]["fisher_cosine_summary"]["median"]
        assert float(row["median_fisher_cosine"]) == median


def test_sweep_table_has_no_paths_or_times(swept):
    text = (swept / "results.csv").read_text()
    assert str(swept) not in text
    assert "seconds" not in text.splitlines()[0]
    assert "created" not in text.splitlines()[0]


def test_sweep_rerun_reuses_everything(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    table = (out / "results.csv").read_bytes()
    before = file_times(out)
    assert sweep(out) == 0
    assert file_times(out) == before
    assert (out / "results.csv").read_bytes() == table


def test_sweep_resumes_only_unfinished_run(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    damaged = out / "runs" / RUN_NAMES[1]
    metrics = (damaged / "metrics.csv").read_text().splitlines()
    (damaged / "metrics.csv").write_text("\n".join(metrics[:4]) + "\n")
    (damaged / "last.safetensors").unlink()
    (damaged / "status.json").write_text('{"state": "interrupted", "epoch": 2}')
    others = [n for n in RUN_NAMES if n != RUN_NAMES[1]]
    before = file_times(out, others)
    assert sweep(out, "--no-analysis") == 0
    assert file_times(out, others) == before
    assert json.loads((damaged / "status.json").read_text())["state"] == "finished"
    assert (damaged / "metrics.csv").read_text().splitlines() == metrics
    # The retrained run's analysis.json describes the run it replaced, so it is
    # stale and left out of the table until the run is analysed again.
    rows = read_table(out)
    assert [row["analysis"] for row in rows] == ["done", "none", "done", "done"]
    assert rows[1]["final_test_acc"] == read_table(swept)[1]["final_test_acc"]


def test_sweep_no_analysis_lists_unanalysed(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    (out / "runs" / RUN_NAMES[0] / "analysis.json").unlink()
    assert sweep(out, "--no-analysis") == 0
    rows = read_table(out)
    assert [row["analysis"] for row in rows] == ["none", "done", "done", "done"]
    assert rows[0]["compression_factor_fisher"] == ""
    assert rows[0]["final_test_acc"] != ""
    assert not (out / "runs" / RUN_NAMES[0] / "analysis.json").exists()


def test_sweep_damaged_finished_run_fails(swept, tmp_path, capsys):
    out = copy_of(swept, tmp_path)
    (out / "runs" / RUN_NAMES[0] / "metrics.csv").unlink()
    assert sweep(out) == 1
    rows = read_table(out)
    assert [row["analysis"] for row in rows] == ["failed", "done", "done", "done"]
    assert rows[0]["state"] == "finished"
    assert f"analysis of {RUN_NAMES[0]} failed" in capsys.readouterr().err


def test_sweep_other_grid_needs_force(swept, tmp_path, capsys):
    out = copy_of(swept, tmp_path)
    record = (out / "sweep.json").read_bytes()
    args = ["sweep", *TINY_SWEEP, "--out", str(out), "--grid", "weight_decay=0,1e-4"]
    assert_one_line_error(capsys, main(args), "contains a sweep with other runs")
    assert (out / "sweep.json").read_bytes() == record
    narrower = [a if a != "0-1" else "0" for a in TINY_SWEEP]
    args = ["sweep", *narrower, "--out", str(out)]
    assert_one_line_error(capsys, main(args), "pass --force")
    before = file_times(out)
    assert main([*args, "--force"]) == 0
    assert file_times(out) == before
    assert [row["run"] for row in read_table(out)] == [
        "runs/alpha=0.3_seed0", "runs/alpha=3_seed0"]


def test_sweep_stale_run_folder_needs_force(swept, tmp_path, capsys):
    out = copy_of(swept, tmp_path)
    stale = out / "runs" / RUN_NAMES[2]
    header = json.loads((stale / "config.json").read_text())
    header["config"]["lr"] = 0.001
    (stale / "config.json").write_text(json.dumps(header))
    assert_one_line_error(capsys, sweep(out), "it was trained with lr=0.001, not 0.005")
    assert json.loads((stale / "config.json").read_text())["config"]["lr"] == 0.001
    others = [n for n in RUN_NAMES if n != RUN_NAMES[2]]
    before = file_times(out, others)
    assert sweep(out, "--force", "--no-analysis") == 0
    assert json.loads((stale / "config.json").read_text())["config"]["lr"] == 0.005
    assert json.loads((stale / "status.json").read_text())["state"] == "finished"
    assert file_times(out, others) == before


def test_sweep_rejects_foreign_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert_one_line_error(capsys, sweep(out, "--force"), "not a sweep folder")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_sweep_without_ray_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "sweep"
    code = sweep(out, "--backend", "ray")
    assert_one_line_error(capsys, code, "install groklab[ray]")
    assert not out.exists()


def test_sweep_failed_run_exit_status(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--task", "modadd", "--grid", "lr=1e30", "--seeds", "0",
                 "--set", "p=11", "--set", "hidden=8", "--set", "epochs=3",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "run lr=1e+30_seed0 failed: training diverged" in err
    (row,) = read_table(out)
    assert row["state"] == "failed"
    assert row["analysis"] == "none"


def test_sweep_ising_builds_data_once(tmp_path):
    out = tmp_path / "sweep"
    cache = tmp_path / "cache"
    code = main([
        "sweep", "--task", "ising", "--grid", "alpha=1,10", "--seeds", "0",
        "--set", "ising_lattice=8", "--set", "ising_n_temperatures=6",
        "--set", "ising_samples_per_temperature=20", "--set", "ising_train=40",
        "--set", "ising_test=60", "--set", "hidden=10", "--set", "epochs=2",
        "--out", str(out), "--cache-dir", str(cache), "--no-analysis", "--quiet",
        "--workers", "2", "--max-members", "1",
    ])
    assert code == 0
    assert len(list(cache.glob("ising-*.npz"))) == 1
    assert [row["state"] for row in read_table(out)] == ["finished", "finished"]
