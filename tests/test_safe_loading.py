"""Nothing groklab reads from disk can run code, unless the user trusts a pickle.

The source scan finds every call that could unpickle: ``pickle.load(s)``,
``torch.load`` and ``np.load``. The behavioural test checks the one
guarded pickle reader.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

import groklab
from groklab.tasks.ising.importer import import_dataset

SOURCE = Path(groklab.__file__).parent
# The importer's pickle reader, reached only after import_dataset checked trust_pickle.
TRUSTED_PICKLE_READERS = {("tasks/ising/importer.py", "_read_pickle")}


def loading_calls() -> list[tuple[str, str, ast.Call]]:
    """Return (file, enclosing function, call) for every pickle, torch or numpy load."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        # ast.walk visits outer functions before nested ones, so the innermost
        # enclosing function is the one recorded last.
        enclosing: dict[int, str] = {}
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    enclosing[id(node)] = function.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node) in LOADERS:
                function = enclosing.get(id(node), "<module>")
                found.append((str(path.relative_to(SOURCE)), function, node))
    return found


LOADERS = {"pickle.load", "pickle.loads", "torch.load", "np.load", "numpy.load"}


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_no_unguarded_unpickling():
    calls = loading_calls()
    assert calls, "the scan found no loading call at all: check SOURCE"
    for file, function, call in calls:
        name = _call_name(call)
        where = f"{file}:{call.lineno} in {function}"
        if name.startswith("pickle."):
            assert (file, function) in TRUSTED_PICKLE_READERS, where
        elif name == "torch.load":
            assert _keyword(call, "weights_only") is True, where
        else:
            assert _keyword(call, "allow_pickle") is False, where


def test_untrusted_pickle_not_loaded(tmp_path):
    marker = tmp_path / "created-by-unpickling"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    source = tmp_path / "data.pkl"
    source.write_bytes(pickle.dumps([Payload()]))
    with pytest.raises(ValueError, match="pass --trust-pickle"):
        import_dataset(source)
    assert not marker.exists()
