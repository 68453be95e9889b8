"""Report page helpers, and the rendered report checked in headless Chromium."""

import html
import io
import json
import os
import re
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from groklab.analysis.run import analyze_run
from groklab.config import AnalysisConfig
from groklab.report.compare import compare_runs
from groklab.report.figures import save_figure
from groklab.report.html import figure_html, render_report, table_html
from render_check import find_chromium, render_page
from test_cli import train_tiny

CHROMIUM = find_chromium()
NO_CHROMIUM = "chromium not found on PATH: run scripts/ensure-chromium.sh to install it"
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

SUMMARY = {"versions": {"groklab": "test"}, "analysis_config": {}}
CLAIM = {
    "number": 1, "id": "same_features", "claim": "same features", "task": "modadd",
    "verdict": "inconclusive", "value": None, "spread": None,
    "n_seeds": {"grok": 1, "steady": 1}, "statistic": "agreement", "threshold": 0.5,
    "figure": "extra_curve", "details": {},
}
# A 1x1 PNG, small enough to embed in a test page.
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
    "WjR9awAAAABJRU5ErkJggg=="
)


def write_page(folder: Path, body: str) -> Path:
    page = folder / "page.html"
    page.write_text(f"<!DOCTYPE html><html><body>{body}</body></html>")
    return page


def csv_block(page: str, table_id: str) -> str:
    match = re.search(f'<pre id="{table_id}-csv">(.*?)</pre>', page, re.S)
    assert match, f"no CSV block for table {table_id}"
    return html.unescape(match.group(1))


def draw_figure(folder: Path, stem: str) -> Path:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 2])
    return save_figure(fig, folder / "figures" / stem)


def test_table_html_escapes_cells():
    page = table_html("scores", ["name<", "value"], [["<b>x</b>", "1,5"], ["y", "2"]])
    assert '<table id="scores"><thead><tr><th>name&lt;</th>' in page
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in page
    assert "<b>" not in page
    assert 'data-copy-csv="scores"' in page
    assert csv_block(page, "scores") == 'name<,value\n<b>x</b>,"1,5"\ny,2\n'


@pytest.mark.parametrize(
    ("table_id", "rows", "fragment"),
    [
        ("1st", [], "invalid table id '1st'"),
        ("a b", [], "invalid table id 'a b'"),
        ('x"y', [], "invalid table id"),
        ("", [], "invalid table id ''"),
        ("ok", [["1", "2"], ["3"]], "row 1 of table 'ok' has 1 cells but the header"),
    ],
)
def test_table_html_bad_input(table_id, rows, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        table_html(table_id, ["a", "b"], rows)


def test_figure_html_links_pdf(tmp_path):
    png = draw_figure(tmp_path, "extra_curve")
    page = figure_html(png, "A curve & its <caption>")
    assert page.startswith('<figure id="extra_curve"><img alt="extra_curve" ')
    assert "data:image/png;base64," in page
    assert '(<a href="figures/extra_curve.pdf">PDF</a>)' in page
    assert "A curve &amp; its &lt;caption&gt;" in page


def test_figure_html_without_pdf(tmp_path):
    png = draw_figure(tmp_path, "extra_curve")
    png.with_suffix(".pdf").unlink()
    page = figure_html(png, "caption")
    assert "PDF" not in page
    assert "<figcaption>caption</figcaption>" in page


def test_figure_html_bad_path(tmp_path):
    png = draw_figure(tmp_path, "extra_curve")
    elsewhere = tmp_path / "extra_curve.png"
    elsewhere.write_bytes(png.read_bytes())
    with pytest.raises(ValueError, match="not in a folder named figures"):
        figure_html(elsewhere, "caption")
    with pytest.raises(ValueError, match="is not a .png file"):
        figure_html(png.with_suffix(".pdf"), "caption")


def test_render_report_extra_sections(tmp_path):
    figure = figure_html(draw_figure(tmp_path, "extra_curve"), "caption")
    extra = [
        ("first-extra", "First <extra>", figure),
        ("second-extra", "Second", table_html("numbers", ["n"], [["1"]])),
    ]
    page = render_report([], SUMMARY, [CLAIM], extra_sections=extra)
    first = page.index('<section id="first-extra"><h2>First &lt;extra&gt;</h2>')
    second = page.index('<section id="second-extra"><h2>Second</h2>')
    claims = page.index("<h2>Claims</h2>")
    assert first < second < claims < page.index("<h2>Provenance</h2>")
    assert '<a href="#extra_curve">extra_curve</a>' in page
    assert csv_block(page, "claims").startswith("number,claim,task,verdict,")


def test_render_report_minimal_page():
    page = render_report([], SUMMARY)
    assert "<section" not in page
    assert "<h2>Claims</h2>" not in page
    assert page.count("<script>") == 1


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([("a", "A", ""), ("a", "B", "")], "section id 'a' is given twice"),
        ([("no space", "A", "")], "invalid section id 'no space'"),
    ],
)
def test_render_report_bad_sections(extra, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        render_report([], SUMMARY, extra_sections=extra)


@needs_chromium
def test_render_check_passes_clean_page(tmp_path):
    image = f'<img alt="pixel" src="data:image/png;base64,{PIXEL}">'
    page = write_page(tmp_path, f"<p>text</p>{image}")
    result = render_page(page, evaluate=["document.querySelector('p').textContent"])
    assert result.errors == []
    assert result.image_count == 1
    assert result.broken_images == []
    assert result.values == ["text"]
    assert result.screenshot.startswith(b"\x89PNG\r\n\x1a\n")


@needs_chromium
@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("undefinedFunction();", "undefinedFunction is not defined"),
        ("console.error('deliberate', 3);", "console error: deliberate 3"),
        ("Promise.reject(new Error('rejected on purpose'));", "rejected on purpose"),
    ],
)
def test_render_check_reports_script_error(tmp_path, script, fragment):
    result = render_page(write_page(tmp_path, f"<script>{script}</script>"))
    assert len(result.errors) == 1
    assert fragment in result.errors[0]


@needs_chromium
def test_render_check_reports_evaluation_error(tmp_path):
    result = render_page(write_page(tmp_path, "<p>x</p>"), evaluate=["missingName"])
    assert result.values == [None]
    assert len(result.errors) == 1
    assert "missingName is not defined" in result.errors[0]


@needs_chromium
def test_render_check_reports_broken_images(tmp_path):
    body = (
        '<img alt="corrupt" src="data:image/png;base64,AAAA">'
        '<img alt="missing" src="missing.png">'
        f'<img alt="fine" src="data:image/png;base64,{PIXEL}">'
    )
    result = render_page(write_page(tmp_path, body))
    assert result.image_count == 3
    assert result.broken_images == ["corrupt", "missing"]
    assert len(result.errors) == 1
    assert "ERR_FILE_NOT_FOUND" in result.errors[0]


@needs_chromium
def test_render_check_times_out(tmp_path):
    page = write_page(tmp_path, "<script>while (true) {}</script>")
    with pytest.raises(TimeoutError, match="within 2 s"):
        render_page(page, timeout=2)


def test_render_check_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        render_page(tmp_path / "absent.html")
    page = write_page(tmp_path, "")
    with pytest.raises(ValueError, match="invalid timeout 0"):
        render_page(page, timeout=0)


# Clicks the header of column ``column`` of table ``table`` and returns the
# column's cells and the header's aria-sort state.
CLICK_AND_READ = """
(() => {{
  const header = document.querySelectorAll("#{table} thead th")[{column}];
  header.click();
  const rows = document.querySelectorAll("#{table} tbody tr");
  return {{
    cells: Array.from(rows, (row) => row.cells[{column}].textContent),
    sort: header.getAttribute("aria-sort"),
  }};
}})()
"""

# Clicks a table's Copy-as-CSV button and returns the status text shown after
# the clipboard request has settled.
CLICK_COPY = """
(async () => {
  document.querySelector('button[data-copy-csv="numbers"]').click();
  await new Promise((resolve) => setTimeout(resolve, 200));
  return document.getElementById("numbers-copy-status").textContent;
})()
"""


@needs_chromium
def test_report_table_sorts_numbers(tmp_path):
    values = ["10", "9", "n/a", "0.5 \u00b1 0.1", "1e-3", "-2", "run10", "run2"]
    rows = [[f"row {i}", value] for i, value in enumerate(values)]
    table = table_html("numbers", ["name", "value"], rows)
    section = ("numbers-section", "Numbers", table)
    page = tmp_path / "report.html"
    page.write_text(render_report([], SUMMARY, extra_sections=[section]))
    click = CLICK_AND_READ.format(table="numbers", column=1)
    result = render_page(page, evaluate=[click, click, CLICK_COPY])
    assert result.errors == []
    ascending = ["-2", "1e-3", "0.5 \u00b1 0.1", "9", "10", "n/a", "run2", "run10"]
    assert result.values[0] == {"cells": ascending, "sort": "ascending"}
    assert result.values[1] == {"cells": ascending[::-1], "sort": "descending"}
    assert result.values[2] in {"copied", "copy failed: select the CSV below instead"}


TINY_ANALYSIS = AnalysisConfig(
    fisher_inputs=24, geometry_fisher_inputs=8, n_fractions=11, max_checkpoints=5
)

# Facts about the rendered report that the tests below check, gathered in one
# page load: every table's controls, the claim figure links and the PDF links.
REPORT_FACTS = """
({
  tables: Array.from(document.querySelectorAll("table"), (table) => ({
    id: table.id,
    head: table.tHead !== null,
    button: document.querySelector(`button[data-copy-csv="${table.id}"]`) !== null,
    csv: document.getElementById(`${table.id}-csv`) !== null,
  })),
  claimLinksResolve: Array.from(document.querySelectorAll("#claims a")).every(
    (link) => document.getElementById(link.getAttribute("href").slice(1)) !== null),
  pdfLinks: Array.from(document.querySelectorAll("figcaption a"),
    (link) => link.getAttribute("href")),
})
"""


@pytest.fixture(scope="module")
def rendered_report(tmp_path_factory):
    """Build a report from two tiny modular-addition runs and render it once."""
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    tmp_path = tmp_path_factory.mktemp("render")
    runs = [train_tiny(tmp_path, "modadd", regime) for regime in ("grok", "steady")]
    # Analysing first without per-run figures leaves compare only the report's
    # own figures to draw, which is most of the time left.
    for run in runs:
        analyze_run(run, TINY_ANALYSIS, progress=False, figures=False)
    report = compare_runs(runs, tmp_path / "report", TINY_ANALYSIS, progress=False)
    sort_claims = CLICK_AND_READ.format(table="claims", column=0)
    result = render_page(report, evaluate=[REPORT_FACTS, sort_claims, sort_claims])
    return report, result


@pytest.mark.slow
def test_report_renders_without_errors(rendered_report):
    report, result = rendered_report
    assert result.errors == []
    assert result.broken_images == []
    assert result.image_count == report.read_text().count("<img ")
    assert result.image_count >= 8


@pytest.mark.slow
def test_report_tables_have_controls(rendered_report):
    _, result = rendered_report
    tables = result.values[0]["tables"]
    assert [table["id"] for table in tables] == ["modadd-summary", "claims"]
    for table in tables:
        assert table["head"], table["id"]
        assert table["button"], table["id"]
        assert table["csv"], table["id"]
    assert result.values[0]["claimLinksResolve"]


@pytest.mark.slow
def test_report_claims_sort_by_number(rendered_report):
    report, result = rendered_report
    claims = json.loads((report.parent / "claims.json").read_text())
    numbers = sorted((str(entry["number"]) for entry in claims), key=int)
    assert result.values[1] == {"cells": numbers, "sort": "ascending"}
    assert result.values[2] == {"cells": numbers[::-1], "sort": "descending"}


@pytest.mark.slow
def test_report_pdf_links_resolve(rendered_report):
    report, result = rendered_report
    links = result.values[0]["pdfLinks"]
    assert len(links) == result.image_count
    for link in links:
        assert (report.parent / link).is_file(), link


def artifacts_folder() -> Path:
    """Return $GROKLAB_TEST_ARTIFACTS, else test-artifacts/ in the repository."""
    folder = os.environ.get("GROKLAB_TEST_ARTIFACTS")
    if folder:
        return Path(folder)
    return Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.mark.slow
def test_report_screenshot_saved(rendered_report):
    _, result = rendered_report
    path = artifacts_folder() / "report.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(result.screenshot)
    pixels = matplotlib.image.imread(io.BytesIO(path.read_bytes()), format="png")
    height, width = pixels.shape[:2]
    assert width == 1280
    assert height > 2000
    not_white = np.mean(pixels[..., :3].min(axis=2) < 0.95)
    assert not_white > 0.02
    assert pixels.std() > 0.05
