"""The README's guarantees name tests that exist, so the list cannot drift from the suite."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Guarantees on crashes and bad input"


def guarantee_rows() -> list[str]:
    """Return the table rows of the README's guarantees section, without the header."""
    text = (ROOT / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [row for row in rows[1:] if not row.startswith("| ---")]


def named_tests(cell: str) -> dict[str, set[str]]:
    """Return {test file: test names} for a cell such as ``a.py: `t1`, `t2`; b.py::t3``."""
    found: dict[str, set[str]] = {}
    for part in cell.split(";"):
        file_match = re.search(r"`?(test_\w+\.py)", part)
        if file_match is None:
            continue
        names = set(re.findall(r"(?<![\w.])(test_\w+)(?![\w.])", part.replace("::", " ")))
        found.setdefault(file_match.group(1), set()).update(names)
    return found


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_guarantees_name_existing_tests():
    rows = guarantee_rows()
    assert len(rows) >= 10
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        tests = named_tests(cells[-1])
        assert tests, f"no test named in: {cells[0][:60]}"
        for file, names in tests.items():
            defined = defined_tests(ROOT / "tests" / file)
            missing = sorted(names - defined)
            assert not missing, f"{file} has no {missing} (row: {cells[0][:60]})"
