"""No function in apt_core, client or server over 60 body lines: long ones read as steps.

A function's body runs from its first statement after the docstring to its last line;
the signature and docstring do not count (a typer command with many options is a
declaration, not a sequence of steps). Modules are parsed, not imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FUNCTION_MAX_BODY_LINES = 60

#: Functions allowed over the limit while someone rewrites them: "path::qualname" -> who
#: and why. Empty: every function is within the limit. The test fails when a listed
#: function is no longer long, so an entry cannot outlive its reason.
_LONG_FUNCTION_OWNERS: dict[str, str] = {}

#: Generated code: Alembic revisions are written once and never read as steps.
_FUNCTION_LENGTH_SKIP = ("server/coordinator/alembic/versions",)


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of ``node``.

    The signature and docstring do not count: a typer command with many options is a
    declaration, not a sequence of steps.
    """
    body = node.body
    if (
        len(body) > 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    end = node.end_lineno or body[-1].lineno
    return end - body[0].lineno + 1


def _function_lengths(source: str) -> Iterator[tuple[str, int]]:
    """(qualified name, body lines) of every function and method in ``source``."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{prefix}{child.name}", _body_lines(child)
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(ast.parse(source), "")


def _long_functions() -> dict[str, int]:
    found = {}
    for package in ("apt_core", "client", "server"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(_FUNCTION_LENGTH_SKIP):
                continue
            for name, lines in _function_lengths(path.read_text()):
                if lines > FUNCTION_MAX_BODY_LINES:
                    found[f"{rel}::{name}"] = lines
    return found


def test_functions_stay_under_max_body_lines() -> None:
    # Prepare: STYLE reads a long function as several steps that want names
    long = _long_functions()

    # Execute
    unlisted = [
        f"{name}: {n} body lines" for name, n in long.items() if name not in _LONG_FUNCTION_OWNERS
    ]
    stale = [name for name in _LONG_FUNCTION_OWNERS if name not in long]

    # Assert
    assert not unlisted, "\n".join(unlisted)
    assert not stale, (
        f"no longer over {FUNCTION_MAX_BODY_LINES} body lines, drop from the allowlist: {stale}"
    )


def test_function_length_counts_body_without_signature_and_docstring() -> None:
    # Prepare
    source = (
        "def f(\n    a: int,\n    b: int,\n) -> int:\n"
        '    """Doc.\n\n    More.\n    """\n'
        "    x = a\n    return x + b\n\n"
        "class C:\n    def m(self):\n        def inner():\n            pass\n        return 1\n\n"
        "async def g():\n" + "    await h()\n" * (FUNCTION_MAX_BODY_LINES + 1)
    )

    # Execute
    lengths = dict(_function_lengths(source))

    # Assert
    assert lengths == {
        "f": 2,
        "C.m": 3,
        "C.m.inner": 1,
        "g": FUNCTION_MAX_BODY_LINES + 1,
    }
