"""``groklab reproduce``: settings, alpha-sweep summaries and a tiny end-to-end study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_assertions import assert_one_line_error
from groklab.cli import main
from groklab.config import ConfigError
from groklab.report.alpha_sweep import alpha_table, compressive_onset, plot_alpha_sweep
from groklab.report.study import _annotate_claims
from groklab.study.config import StudyConfig, study_config
from groklab.study.run import _members_per_pack, alpha_spec, check_study_folder, regime_spec
from groklab.training.runfolder import RunFolderError

TINY = [
    "--set", "seeds=2", "--set", "modadd_epochs=6", "--set", "ising_epochs=30",
    "--set", "modadd_alphas=1", "--set", "ising_alphas=3",
    "--set", "modadd_overrides=p=11,hidden=16,checkpoint_every=1",
    "--set", "ising_overrides=ising_lattice=8,ising_n_temperatures=6,"
    "ising_samples_per_temperature=20,ising_train=40,ising_test=60,hidden=10,lr=1e-3",
    "--set", "trajectory_inputs=30", "--set", "trajectory_checkpoints=5",
    "--analysis-set", "fisher_inputs=24", "--analysis-set", "geometry_fisher_inputs=8",
    "--analysis-set", "n_fractions=11", "--analysis-set", "max_checkpoints=5",
    "--analysis-set", "pruning_checkpoints=3",
]
REQUIRED_KEYS = {"id", "claim", "task", "verdict", "statistic", "threshold", "value",
                 "spread", "n_seeds", "figure"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "groklab", *args], capture_output=True, text=True,
        timeout=900,
    )


# --- settings ----------------------------------------------------------------


def test_quick_and_paper_presets():
    quick = study_config("quick", [])
    paper = study_config("paper", [])
    assert quick.seeds >= 2
    assert quick.tasks == ["modadd", "ising"]
    assert paper.seeds == 10
    assert paper.ising_epochs == 100000
    assert min(paper.ising_alphas) == pytest.approx(0.1)
    assert paper.scale == "paper"


def test_overrides_parse_typed_lists():
    config = study_config("quick", ["modadd_alphas=0.5, 2", "tasks=ising"])
    assert config.modadd_alphas == [0.5, 2.0]
    assert config.tasks == ["ising"]
    assert StudyConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("overrides, match", [
    (["seeds=0"], "seeds"),
    (["tasks=modadd,mnist"], "mnist"),
    (["tasks=modadd,modadd"], "each task once"),
    (["modadd_alphas=0.1,-1"], "modadd_alphas"),
    (["modadd_alphas=1,x"], "expected float"),
    (["modadd_overrides=alpha=3"], "study's own keys"),
    (["scale=paper"], "--scale"),
    (["trajectory_checkpoints=1"], "trajectory_checkpoints"),
])
def test_bad_settings_are_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        study_config("quick", overrides)


def test_unknown_scale_is_rejected():
    with pytest.raises(ConfigError, match="unknown scale"):
        study_config("huge", [])


def test_alpha_sweep_leaves_out_the_regime_alphas():
    config = study_config("quick", ["modadd_alphas=0.1,1,10,3", "ising_alphas=1,10"])
    spec = alpha_spec(config, "modadd")
    assert spec.grid == [("alpha", [1.0, 3.0])]
    assert spec.seeds == [0]
    assert alpha_spec(config, "ising") is None
    regimes = regime_spec(config, "ising")
    assert [p.config.regime.value for p in regimes.points()].count("grok") == config.seeds
    assert all(p.config.epochs == config.ising_epochs for p in regimes.points())


def test_members_per_pack_spreads_runs_over_workers():
    assert _members_per_pack("modadd", 6, 2, 10) == 3
    assert _members_per_pack("modadd", 6, 2, 2) == 2
    assert _members_per_pack("modadd", 1, 4, 10) == 1
    assert _members_per_pack("ising", 6, 2, 10) == 1


# --- alpha-sweep summaries ---------------------------------------------------


def _point(alpha, factor, compressive, delay):
    return {"alpha": alpha, "compression_factor": factor, "compressive": compressive,
            "grokking_delay": delay}


def test_alpha_table_known_answer():
    points = [
        _point(0.1, 10.0, True, 0), _point(0.1, 1000.0, True, 2),
        _point(1.0, 4.0, True, None), _point(1.0, 4.0, False, 10),
        _point(10.0, 2.0, False, 40),
    ]
    rows = alpha_table(points)
    assert [r["alpha"] for r in rows] == [0.1, 1.0, 10.0]
    assert rows[0]["compression_factor_geomean"] == pytest.approx(100.0)
    assert rows[0]["log10_factor_std"] == pytest.approx(2 ** 0.5)
    assert rows[0]["median_grokking_delay"] == pytest.approx(1.0)
    assert rows[1]["compressive_fraction"] == pytest.approx(0.5)
    assert rows[1]["n_test_fit"] == 1
    assert rows[2]["log10_factor_std"] is None
    # 0.1 is compressive, 1.0 only half: the regime ends at 0.1.
    assert compressive_onset(rows) == pytest.approx(0.1)


def test_compressive_onset_none_when_smallest_alpha_is_not():
    rows = alpha_table([_point(0.1, 2.0, False, 1), _point(1.0, 9.0, True, 1)])
    assert compressive_onset(rows) is None


def test_alpha_figure_marks_unbounded_and_compressive_runs():
    points = [
        {**_point(0.1, 30.0, True, 0), "compression_unbounded": False},
        {**_point(1.0, None, False, None), "compression_unbounded": True},
        {**_point(10.0, 3.0, False, 50), "compression_unbounded": False},
    ]
    for point in points:
        point.update(pruning_order="fisher", fisher_form="regression", tolerance=0.01)
    fig = plot_alpha_sweep("modadd", points)
    top, bottom = fig.axes
    labels = top.get_legend_handles_labels()[1]
    assert "compressive regime" in labels
    assert any(label.startswith("unbounded") for label in labels)
    assert top.get_xscale() == "log"
    assert "no test fit within the run" in bottom.get_legend_handles_labels()[1]
    assert "regression Fisher" in top.get_title()


# --- end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    cache = tmp_path_factory.mktemp("cache")
    result = run_cli("reproduce", "--out", str(out), "--quiet", "--cache-dir", str(cache),
                     *TINY)
    assert result.returncode == 0, result.stderr
    return out, cache, result


def test_claims_json_has_every_claim_with_evidence(study):
    out, _, result = study
    claims = json.loads((out / "claims.json").read_text())
    numbers = {entry["number"] for entry in claims}
    assert numbers == {1, 2, 3, 4, 5, 6}
    report = (out / "report.html").read_text()
    for entry in claims:
        assert REQUIRED_KEYS <= set(entry)
        assert entry["verdict"] in ("supported", "not_supported", "inconclusive")
        for stem in entry["figure"].split(", "):
            assert (out / "figures" / f"{stem}.png").is_file(), stem
            assert (out / "figures" / f"{stem}.pdf").is_file(), stem
            assert f'id="{stem}"' in report
    modadd_compressive = next(e for e in claims if e["number"] == 2
                              and e["task"] == "modadd")
    alphas = [row["alpha"] for row in modadd_compressive["details"]["alpha_sweep"]]
    assert alphas == [0.1, 1.0, 10.0]
    assert "claim 1 (modadd):" in result.stdout


def test_sensitivity_covers_orders_and_forms(study):
    out, _, _ = study
    rows = json.loads((out / "sensitivity.json").read_text())["rows"]
    settings = {(r["pruning_order"], r["fisher_form"]) for r in rows if r["number"] == 3}
    assert settings == {
        ("fisher", "regression"), ("fisher", "classification"),
        ("fisher_theta2", "regression"), ("fisher_theta2", "classification"),
        ("magnitude", "none"),
    }
    # Claim 5 reads the curves through training, kept for the analysis's form.
    assert {r["fisher_form"] for r in rows if r["number"] == 5} <= {"regression", "none"}
    other = sorted((out / "modadd" / "other_form").glob("*.classification.json"))
    assert len(other) == 4
    record = json.loads(other[0].read_text())
    assert record["analysis_config"]["fisher_form"] == "classification"
    assert record["pruning"]["fisher_form"] == "classification"


def test_trajectories_and_alpha_sweep_are_recorded(study):
    out, _, _ = study
    embedding = json.loads((out / "trajectories.json").read_text())
    assert set(embedding) == {"modadd", "ising"}
    regimes = sorted(run["regime"] for run in embedding["modadd"]["runs"])
    assert regimes == ["grok", "grok", "steady", "steady"]
    summary = json.loads((out / "summary.json").read_text())
    points = summary["ising"]["alpha_sweep"]["points"]
    assert sorted({p["alpha"] for p in points}) == [1.0, 3.0, 10.0]
    assert summary["study_config"]["seeds"] == 2


def test_rerun_resumes_without_training(study):
    out, cache, _ = study
    checkpoint = next((out / "modadd" / "regimes").rglob("*.safetensors"))
    before = checkpoint.stat().st_mtime_ns
    claims = (out / "claims.json").read_text()
    result = run_cli("reproduce", "--out", str(out), "--quiet", "--cache-dir", str(cache),
                     *TINY)
    assert result.returncode == 0, result.stderr
    assert checkpoint.stat().st_mtime_ns == before
    assert (out / "claims.json").read_text() == claims


def test_other_settings_in_a_study_folder_are_refused(study, capsys):
    out, cache, _ = study
    before = (out / "study.json").read_text()
    code = main(["reproduce", "--out", str(out), "--quiet", "--cache-dir", str(cache),
                 *TINY, "--set", "seeds=3"])
    assert_one_line_error(capsys, code, "another study config")
    assert (out / "study.json").read_text() == before


def test_non_empty_folder_without_study_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    code = main(["reproduce", "--out", str(tmp_path), "--quiet", *TINY])
    assert_one_line_error(capsys, code, "contains no study.json")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_bad_override_exits_with_one_line(tmp_path, capsys):
    code = main(["reproduce", "--out", str(tmp_path / "s"), "--set", "seeds=x"])
    assert_one_line_error(capsys, code, "seeds")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("overrides, match", [
    (["seeds=99999999999999999999"], "from 1 to 1000"),
    (["modadd_overrides=p=11,p=13"], "once in the list"),
])
def test_seed_count_and_repeated_keys_are_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        study_config("quick", overrides)


@pytest.mark.parametrize("args, fragment", [
    (["--set", "modadd_overrides=p=1"], "modadd_overrides: invalid p 1"),
    (["--set", "ising_overrides=ising_lattice=5"], "ising_overrides: invalid ising_lattice"),
    (["--max-members", "0"], "invalid --max-members 0"),
    (["--analysis-set", "sloppy_threshold=inf"], "invalid sloppy_threshold"),
])
def test_invalid_study_writes_nothing(tmp_path, capsys, args, fragment):
    code = main(["reproduce", "--out", str(tmp_path / "s"), "--quiet", *TINY, *args])
    assert_one_line_error(capsys, code, fragment)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content", ["null", "[]", "{not json"])
def test_unreadable_study_file_needs_force(tmp_path, content):
    (tmp_path / "study.json").write_text(content)
    record = {"study_config": {}, "analysis_config": {}}
    with pytest.raises(RunFolderError, match="unreadable"):
        check_study_folder(tmp_path, record, force=False)
    check_study_folder(tmp_path, record, force=True)
    assert (tmp_path / "study.json").read_text() == content


def test_claims_name_only_drawn_figures_of_studied_tasks(tmp_path):
    for stem in ("modadd_geometry", "modadd_trajectories", "ising_geometry"):
        (tmp_path / f"{stem}.png").write_bytes(b"png")
    claim = {"number": 4, "id": "task_dependence", "task": "all",
             "figure": "modadd_geometry, ising_geometry", "details": {}}
    sensitivity = {"robustness": {}}
    [entry] = _annotate_claims([claim], {}, sensitivity, {"modadd"}, tmp_path)
    assert entry["figure"] == "modadd_geometry, modadd_trajectories"
