"""Assemble the self-contained report.html: tables, definitions and embedded figures."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

CAPTIONS = {
    "training_curves": "Accuracy and loss against epoch. Dashed: first epoch with train "
    "accuracy >= 0.9 of its maximum; dotted: the same for test accuracy.",
    "features": "Features of the final models. Modular addition: Fourier power of "
    "the first-layer weights per frequency, and each neuron's purity (the share of its "
    "power at its dominant frequency). Ising: the best unit's |correlation| with energy "
    "and |magnetisation| per layer, and a ridge linear probe's held-out R^2.",
    "features_over_time": "The headline feature measure at each analysed checkpoint.",
    "through_training": "Everything on one epoch axis: (a) accuracy, (b) test loss, "
    "(c) features (modular addition: top-k norm fraction and overlap of the key "
    "frequencies with the final ones; Ising: best-layer probe R^2 of energy and |m|), "
    "(d) compression factor under the Fisher order (triangles: nothing kept), (e) "
    "Fisher step length per epoch, (f) Fisher cosine of consecutive steps. Dashed and "
    "dotted lines mark each regime's train-fit and test-fit epochs; shading marks its "
    "plateau.",
    "pruning": "Test loss and accuracy against the fraction of parameters pruned, "
    "globally, for each pruning order. CF: compression factor (definition above).",
    "pruning_layers": "Pruning one layer at a time (first pruning order).",
    "geometry": "Learning dynamics in information space, all parameters. Steps are "
    "between consecutive analysed checkpoints.",
    "geometry_sloppy": "The same for sloppy parameters (final Fisher diagonal below the "
    "threshold).",
    "geometry_stiff": "The same for stiff parameters.",
    "dataset": "The Ising data: sampled mean energy and |magnetisation| per spin at "
    "each temperature (error bars: two standard errors) against the exact energy of the "
    "finite periodic lattice and Yang's infinite-lattice magnetisation; class balance "
    "of the splits; one example configuration per temperature shown (black -1, white +1).",
}

ROWS = [
    ("alpha", lambda s: s["config"]["alpha"]),
    ("epochs", lambda s: s["config"]["epochs"]),
    ("epoch train fit", lambda s: s["epoch_train_fit"]),
    ("epoch test fit", lambda s: s["epoch_test_fit"]),
    ("grokking delay (epochs)", lambda s: s["grokking_delay"]),
    ("final train accuracy", lambda s: s["final_train_acc"]),
    ("final test accuracy", lambda s: s["final_test_acc"]),
    ("final test loss", lambda s: s["final_test_loss"]),
    ("final parameter norm", lambda s: s["final_param_norm"]),
    ("compression factor (headline order)",
     lambda s: s["compression_factor"] or s["compression_note"]),
    ("pruning order", lambda s: s["pruning_order"]),
    ("compression factors by order", lambda s: s["compression_factors"]),
    ("Fisher form", lambda s: s["fisher_form"]),
    ("median Fisher cosine of consecutive steps", lambda s: s["median_fisher_cosine"]),
]

STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #bbb; padding: 4px 8px; text-align: left; font-size: 0.9em; }
th { background: #eee; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; }
code, pre { background: #f6f6f6; }
pre { padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
td.supported { background: #dfd; }
td.not_supported { background: #fdd; }
td.inconclusive { background: #eee; }
thead th { cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
"""

# Sorts every table with a <thead> when a header cell is clicked, and copies a
# table's CSV text for its "Copy as CSV" button. It runs in the page only and
# loads nothing, so the report stays self-contained.
PAGE_SCRIPT = """
function cellKey(row, column) {
  const cell = row.cells[column];
  const text = cell ? cell.textContent.trim() : "";
  const number = /^[-+]?(\\d|\\.\\d)/.test(text) ? parseFloat(text) : NaN;
  return { text, number };
}

// Cells that start with a number compare by that number and sort before text
// cells; text cells compare with digit runs read as numbers.
function compareKeys(a, b) {
  const aIsNumber = !Number.isNaN(a.number);
  const bIsNumber = !Number.isNaN(b.number);
  if (aIsNumber && bIsNumber) return a.number - b.number;
  if (aIsNumber !== bIsNumber) return aIsNumber ? -1 : 1;
  return a.text.localeCompare(b.text, undefined, { numeric: true });
}

// A click sorts the column ascending, or descending when it is already ascending.
function sortTable(table, column) {
  const headers = table.tHead.rows[0].cells;
  const ascending = headers[column].getAttribute("aria-sort") !== "ascending";
  for (const header of headers) header.removeAttribute("aria-sort");
  headers[column].setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const sign = ascending ? 1 : -1;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => sign * compareKeys(cellKey(a, column), cellKey(b, column)));
  body.append(...rows);
}

function copyCsv(tableId) {
  const text = document.getElementById(tableId + "-csv").textContent;
  const status = document.getElementById(tableId + "-copy-status");
  const failed = () => {
    status.textContent = "copy failed: select the CSV below instead";
  };
  if (!navigator.clipboard) {
    failed();
    return;
  }
  navigator.clipboard.writeText(text).then(() => {
    status.textContent = "copied";
  }, failed);
}

for (const table of document.querySelectorAll("table")) {
  if (!table.tHead || table.tBodies.length === 0) continue;
  Array.from(table.tHead.rows[0].cells).forEach((header, column) => {
    header.title = "Click to sort";
    header.addEventListener("click", () => sortTable(table, column));
  });
}
for (const button of document.querySelectorAll("button[data-copy-csv]")) {
  button.addEventListener("click", () => copyCsv(button.dataset.copyCsv));
}
"""

# Table and section ids become element ids, link targets and the prefix of
# the CSV block's id, so they are limited to characters that need no escaping.
ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_format(v)}" for k, v in value.items())
    if value is None:
        return "n/a"
    return str(value)


def _image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _check_id(kind: str, value: str) -> None:
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid {kind} id {value!r}: use a letter followed by letters, digits, "
            "'-' or '_'"
        )


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _sortable_table(
    table_id: str, header: list[str], body_rows: list[str], csv_text: str
) -> str:
    """Wrap HTML body rows in a sortable table followed by its Copy-as-CSV controls.

    The page script finds the table by its ``<thead>`` and the button by its
    ``data-copy-csv`` attribute. The CSV text is in the element ``<table_id>-csv``.
    """
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    return f"""<table id="{table_id}"><thead><tr>{head}</tr></thead>
<tbody>{"".join(body_rows)}</tbody></table>
<p><button type="button" data-copy-csv="{table_id}">Copy as CSV</button>
<span id="{table_id}-copy-status"></span></p>
<details><summary>CSV</summary>
<pre id="{table_id}-csv">{html.escape(csv_text)}</pre></details>"""


def table_html(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    """Render plain-text cells as a sortable table with a Copy-as-CSV button.

    Every cell is HTML-escaped, and the CSV contains the same text. Raises
    ValueError on an invalid ``table_id`` or a row whose length differs from
    the header's.
    """
    _check_id("table", table_id)
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                f"row {index} of table {table_id!r} has {len(row)} cells but the "
                f"header has {len(header)}: give every row one cell per column"
            )
    body_rows = [
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows
    ]
    return _sortable_table(table_id, header, body_rows, _csv_text(header, rows))


def figure_html(path: Path, caption: str) -> str:
    """Render the PNG at ``path`` as an embedded figure with its caption and a PDF link.

    The figure's id is the file stem, so claim rows can link to it. The link
    points to ``figures/<stem>.pdf`` relative to report.html, so the PNG must
    lie in the ``figures`` folder beside the report, as ``save_figure`` writes
    it. The link is left out when that PDF does not exist.
    """
    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(
            f"figure {path} is not a .png file: pass the PNG of the figure"
        )
    if path.parent.name != "figures":
        raise ValueError(
            f"figure {path} is not in a folder named figures: save it under "
            "figures/ beside report.html so that its PDF link resolves"
        )
    link = ""
    if path.with_suffix(".pdf").is_file():
        href = html.escape(quote(f"figures/{path.stem}.pdf"))
        link = f' (<a href="{href}">PDF</a>)'
    return (
        f'<figure id="{html.escape(path.stem)}">{_image(path)}'
        f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>"
    )


def _table(task: str, task_summary: dict[str, Any]) -> str:
    extra = []
    if "key_frequencies" in task_summary["grok"]:
        extra = [
            ("key frequencies", "key_frequencies"),
            ("share of norm in key frequencies", "top_k_norm_fraction"),
            ("mean neuron purity (token a)", "neuron_purity_mean"),
            ("mean neuron IPR (token a)", "neuron_ipr_mean"),
            ("neurons with the same dominant frequency for a and b",
             "dominant_frequency_agreement"),
        ]
    rows_spec = ROWS + [(lab, lambda s, k=k: s[k]) for lab, k in extra]
    for layer, targets in task_summary["grok"].get("feature_correlations", {}).items():
        for target in targets:
            for stat in ("max_abs_corr", "probe_r2"):
                rows_spec.append((
                    f"{layer}: {stat.replace('_', ' ')} with {target.replace('_', ' ')}",
                    lambda s, l=layer, t=target, k=stat: s["feature_correlations"][l][t][k],
                ))
    rows = [
        [label] + [_format(getter(task_summary[r])) for r in ("grok", "steady")]
        for label, getter in rows_spec
    ]
    return table_html(f"{task}-summary", ["quantity", "grok", "steady"], rows)


def _section(task: str, task_summary: dict[str, Any], figures: dict[str, Path]) -> str:
    titles = {"modadd": "Modular addition (MLP)", "ising": "2D Ising phase (CNN)"}
    heading = f"<h2>{html.escape(titles.get(task, task))}</h2>"
    parts = [heading, _table(task, task_summary)]
    definition = task_summary["grok"]["compression_definition"]
    parts.append(f"<p><b>Compression factor:</b> {html.escape(definition)}</p>")
    comparison = task_summary.get("comparison", {})
    if comparison:
        parts.append(f"<p><b>Comparison:</b> {html.escape(_format(comparison))}</p>")
    for name, path in figures.items():
        parts.append(figure_html(path, CAPTIONS.get(name, name)))
    return "\n".join(parts)


CLAIM_COLUMNS = (
    "number", "claim", "task", "verdict", "value", "spread", "n_seeds", "statistic",
    "threshold", "figure",
)

def claims_csv(entries: list[dict[str, Any]]) -> str:
    """Return the claim entries as CSV, one row per claim and task.

    ``n_seeds`` is written as ``group=count`` pairs separated by semicolons.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CLAIM_COLUMNS)
    for entry in entries:
        row = dict(entry)
        row["n_seeds"] = ";".join(f"{k}={v}" for k, v in entry["n_seeds"].items())
        writer.writerow(["" if row[c] is None else row[c] for c in CLAIM_COLUMNS])
    return buffer.getvalue()


def _value_cell(entry: dict[str, Any]) -> str:
    """Format the value with its spread (a factor for claim 3, else a difference)."""
    value, spread = entry["value"], entry["spread"]
    if value is None:
        return "n/a"
    if spread is None:
        return _format(float(value))
    if entry["id"] == "compression_factors":
        return f"{_format(float(value))} \u00d7/\u00f7 {_format(float(spread))}"
    return f"{_format(float(value))} \u00b1 {_format(float(spread))}"


def _settings_note(details: dict[str, Any]) -> str:
    """Name the pruning order and tolerance a claim was tested with, if it has them."""
    settings = [
        f"{name.replace('_', ' ')} {details[name]}"
        for name in ("pruning_order", "tolerance")
        if details.get(name) is not None
    ]
    return f" ({', '.join(settings)})" if settings else ""


def _figure_links(entry: dict[str, Any], figure_ids: set[str]) -> str:
    links = []
    for stem in entry["figure"].split(", "):
        name = html.escape(stem)
        links.append(f'<a href="#{name}">{name}</a>' if stem in figure_ids else name)
    return ", ".join(links)


CLAIMS_HEADER = [
    "#", "claim", "task", "verdict", "value", "seeds", "statistic", "threshold",
    "figure",
]


def _claims_section(entries: list[dict[str, Any]], figure_ids: set[str]) -> str:
    rows = []
    for entry in entries:
        reason = entry["details"].get("reason")
        verdict = html.escape(entry["verdict"].replace("_", " "))
        if reason:
            verdict += f"<br><small>{html.escape(reason)}</small>"
        verdict_cell = f'<td class="{html.escape(entry["verdict"])}">{verdict}</td>'
        before = [str(entry["number"]), entry["claim"], entry["task"]]
        after = [
            _value_cell(entry),
            _format(entry["n_seeds"]),
            entry["statistic"] + _settings_note(entry["details"]),
            str(entry["threshold"]),
        ]
        row = (
            "".join(f"<td>{html.escape(text)}</td>" for text in before)
            + verdict_cell
            + "".join(f"<td>{html.escape(text)}</td>" for text in after)
            + f"<td>{_figure_links(entry, figure_ids)}</td>"
        )
        rows.append(f"<tr>{row}</tr>")
    table = _sortable_table("claims", CLAIMS_HEADER, rows, claims_csv(entries))
    return f"""<h2>Claims</h2>
<p>Verdicts on six claims of a published grokking study, from every seed given
(the tables above show the lowest seed of each regime). A group with fewer than two
seeds is inconclusive. The statistics and thresholds are defined in docs/claims.md of
groklab; claims.json in this folder contains every entry with its inputs.</p>
{table}"""


def _extra_section(anchor_id: str, title: str, body: str) -> str:
    heading = f"<h2>{html.escape(title)}</h2>"
    return f'<section id="{anchor_id}">{heading}\n{body}\n</section>'


def _check_extra_sections(extra_sections: Sequence[tuple[str, str, str]]) -> None:
    seen: set[str] = set()
    for anchor_id, _, _ in extra_sections:
        _check_id("section", anchor_id)
        if anchor_id in seen:
            raise ValueError(
                f"section id {anchor_id!r} is given twice: give each extra section "
                "its own id"
            )
        seen.add(anchor_id)


# The figure markup that figure_html writes, used to find the figures inside
# extra sections so that claim rows can link to them.
FIGURE_ID = re.compile(r'<figure id="([^"]+)">')


def render_report(
    sections: list[tuple[str, dict, dict]],
    summary: dict[str, Any],
    claims: list[dict[str, Any]] | None = None,
    extra_sections: Sequence[tuple[str, str, str]] = (),
) -> str:
    """Return the report page. Figures are embedded, so the file is self-contained.

    ``extra_sections`` are ``(anchor_id, title, html_body)`` triples, placed
    after the task sections and before the Claims section that ``claims``
    (entries of claims.json) adds. Their bodies are inserted as given, so
    build them with ``table_html`` and ``figure_html``. Raises ValueError on an
    invalid or repeated anchor id.
    """
    _check_extra_sections(extra_sections)
    parts = [_section(*section) for section in sections]
    parts += [_extra_section(*extra) for extra in extra_sections]
    if claims is not None:
        figure_ids = {
            path.stem for _, _, figures in sections for path in figures.values()
        }
        for _, _, extra_body in extra_sections:
            figure_ids.update(html.unescape(m) for m in FIGURE_ID.findall(extra_body))
        parts.append(_claims_section(claims, figure_ids))
    body = "\n".join(parts)
    provenance = json.dumps(
        {"versions": summary["versions"], "analysis_config": summary["analysis_config"]},
        indent=2,
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>groklab report: grokking vs steady learning</title>
<style>{STYLE}</style></head>
<body>
<h1>Grokking vs steady learning</h1>
<p>Each task trains the same architecture on the same data split by two paths: grokking
(large initial scale alpha plus weight decay) and steady learning (small alpha). The
numbers below are computed from these runs; every Fisher-based number names the Fisher
form, pruning order and tolerance that produced it.</p>
{body}
<h2>Provenance</h2>
<pre>{html.escape(provenance)}</pre>
<script>{PAGE_SCRIPT}</script>
</body></html>
"""
