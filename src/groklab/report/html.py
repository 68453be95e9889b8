"""Assemble the self-contained report.html: tables, definitions and embedded figures."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

CAPTIONS = {
    "training_curves": "Accuracy and loss against epoch. Dashed: first epoch with train "
    "accuracy >= 0.9 of its maximum; dotted: the same for test accuracy.",
    "features": "Features of the final models. Modular addition: Fourier power of "
    "the first-layer weights per frequency, and each neuron's purity (the share of its "
    "power at its dominant frequency). Ising: the best unit's |correlation| with energy "
    "and |magnetisation| per layer, and a ridge linear probe's held-out R^2.",
    "features_over_time": "The headline feature measure at each analysed checkpoint.",
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
"""


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


def _table(task_summary: dict[str, Any]) -> str:
    rows = ["<tr><th>quantity</th><th>grok</th><th>steady</th></tr>"]
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
    for label, getter in rows_spec:
        cells = "".join(
            f"<td>{html.escape(_format(getter(task_summary[r])))}</td>"
            for r in ("grok", "steady")
        )
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _section(task: str, task_summary: dict[str, Any], figures: dict[str, Path]) -> str:
    titles = {"modadd": "Modular addition (MLP)", "ising": "2D Ising phase (CNN)"}
    parts = [f"<h2>{html.escape(titles.get(task, task))}</h2>", _table(task_summary)]
    definition = task_summary["grok"]["compression_definition"]
    parts.append(f"<p><b>Compression factor:</b> {html.escape(definition)}</p>")
    comparison = task_summary.get("comparison", {})
    if comparison:
        parts.append(f"<p><b>Comparison:</b> {html.escape(_format(comparison))}</p>")
    for name, path in figures.items():
        caption = CAPTIONS.get(name, name)
        pdf = Path("figures") / f"{path.stem}.pdf"
        parts.append(
            f'<figure id="{html.escape(path.stem)}">{_image(path)}'
            f"<figcaption>{html.escape(caption)} "
            f'(<a href="{pdf}">PDF</a>)</figcaption></figure>'
        )
    return "\n".join(parts)


CLAIM_COLUMNS = (
    "number", "claim", "task", "verdict", "value", "spread", "n_seeds", "statistic",
    "threshold", "figure",
)

# Copies the CSV text of the claims table to the clipboard. It runs in the
# page only and loads nothing.
COPY_SCRIPT = """
function copyClaimsCsv() {
  const text = document.getElementById("claims-csv").textContent;
  navigator.clipboard.writeText(text).then(
    () => { document.getElementById("claims-copy-status").textContent = "copied"; },
    () => { document.getElementById("claims-copy-status").textContent =
      "copy failed: select the CSV below instead"; });
}
"""


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


def _claims_section(entries: list[dict[str, Any]], figure_ids: set[str]) -> str:
    header = "".join(
        f"<th>{name}</th>" for name in (
            "#", "claim", "task", "verdict", "value", "seeds", "statistic",
            "threshold", "figure",
        )
    )
    rows = [f"<tr>{header}</tr>"]
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
    return f"""<h2>Claims</h2>
<p>Verdicts on six claims of a published grokking study, from every seed given
(the tables above show the lowest seed of each regime). A group with fewer than two
seeds is inconclusive. The statistics and thresholds are defined in docs/claims.md of
groklab; claims.json in this folder contains every entry with its inputs.</p>
<table id="claims">{"".join(rows)}</table>
<p><button type="button" onclick="copyClaimsCsv()">Copy as CSV</button>
<span id="claims-copy-status"></span></p>
<details><summary>CSV</summary>
<pre id="claims-csv">{html.escape(claims_csv(entries))}</pre></details>
<script>{COPY_SCRIPT}</script>"""


def render_report(
    sections: list[tuple[str, dict, dict]],
    summary: dict[str, Any],
    claims: list[dict[str, Any]] | None = None,
) -> str:
    """Return the report page. Figures are embedded, so the file is self-contained.

    ``claims`` (entries of claims.json) adds a Claims section when given.
    """
    body = "\n".join(_section(*section) for section in sections)
    if claims is not None:
        figure_ids = {
            path.stem for _, _, figures in sections for path in figures.values()
        }
        body += "\n" + _claims_section(claims, figure_ids)
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
</body></html>
"""
