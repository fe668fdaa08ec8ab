"""No module of hotlink reads or writes another module's underscore-prefixed
attributes: modules talk through the names they make public (issue 14).

An attribute ``obj._name`` is allowed in a module when ``_name`` belongs to
that module: a class defined there assigns ``self._name``, lists it in
``__slots__``, or defines a method of that name.  ``self._x`` and ``cls._x``
are always allowed.  A few underscore names are public API of the standard
library (namedtuple's ``_replace``; ``sys._getframe``; the process-exit function of ``os``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import hotlink

SRC = Path(hotlink.__file__).parent
STDLIB_PUBLIC = {"_replace", "_asdict", "_fields", "_make", "_exit", "_getframe", "_current_frames"}


def _own_names(tree: ast.Module) -> set[str]:
    """Underscore attributes that classes of this module define."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in ast.walk(node):
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("_"):
                    own.add(item.name)
                elif isinstance(item, ast.Attribute) and isinstance(item.ctx, ast.Store) \
                        and isinstance(item.value, ast.Name) and item.value.id in ("self", "cls"):
                    own.add(item.attr)
                elif isinstance(item, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "__slots__" for t in item.targets):
                    for elt in ast.walk(item.value):
                        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                            own.add(elt.value)
    return own


def violations() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        own = _own_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            # ("__name" without a trailing "__" is a C symbol looked up through ctypes)
            if not name.startswith("_") or name.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if name in own or name in STDLIB_PUBLIC:
                continue
            found.append(f"{path.relative_to(SRC)}:{node.lineno}: .{name}")
    return found


def test_no_module_touches_another_modules_private_attributes():
    found = violations()
    assert not found, f"{len(found)} private attributes used across modules:\n" + "\n".join(found)


def test_the_check_can_fail(tmp_path):
    """The walker does flag an access to another module's private name."""
    bad = ast.parse("def f(lib):\n    return lib._symbols\n")
    assert "_symbols" not in _own_names(bad)
    assert any(isinstance(n, ast.Attribute) and n.attr == "_symbols" for n in ast.walk(bad))
