"""The shape of the code, checked: short functions, and one exception tree."""

from __future__ import annotations

import ast
from pathlib import Path

ETL = Path(__file__).resolve().parents[1] / "etl"
MAX_LINES = 50


def modules() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(ETL.rglob("*.py"))
    ]


def test_no_function_is_longer_than_fifty_lines() -> None:
    """Every function and method of etl/ fits in 50 lines (docstring included)."""
    long = [
        f"{path.relative_to(ETL.parent)}:{node.lineno} {node.name} ({length} lines)"
        for path, tree in modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_LINES
    ]
    assert not long, "functions over 50 lines:\n" + "\n".join(long)


def test_every_exception_class_lives_in_errors_py() -> None:
    """No module of etl/ but errors.py defines an exception class (the tree is drawn once)."""
    names = {"Exception", "BaseException", "EtlError", "SourceError", "TransientSourceError",
             "FatalSourceError", "AuthError", "ConfigError", "LoadError", "ValueError"}  # fmt: skip
    found = [
        f"{path.relative_to(ETL.parent)}:{node.lineno} {node.name}"
        for path, tree in modules()
        if path.name != "errors.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(
            (base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")) in names
            or (isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception")))
            for base in node.bases
        )
    ]
    assert not found, "exception classes outside etl/errors.py:\n" + "\n".join(found)


def test_pre_commit_runs_what_make_lint_runs() -> None:
    """The pre-commit hooks are `make lint`'s commands, so a commit meets CI's checks."""
    import re

    import yaml

    root = ETL.parent
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    lint = {line.strip().replace("$(VENV)", ".venv") for line in recipe.splitlines()[1:]}
    config = yaml.safe_load((root / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {hook["entry"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {re.sub(r" \.$", "", command) for command in lint} == hooks
