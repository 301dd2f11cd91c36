"""The package's shape: its import layers (the contracts in pyproject.toml, checked with
import-linter) and small functions (docs/architecture.md)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from parity_support import REPO

#: The most lines and parameters a function of lvae_jax may have.
MAX_LINES, MAX_PARAMS = 80, 8


def test_imports_follow_the_layers():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency (pip install -e '.[dev]')"
    r = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "0 broken" in r.stdout


def _functions():
    for path in sorted((REPO / "lvae_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [x for x in a.posonlyargs + a.args + a.kwonlyargs
                          if x.arg not in ("self", "cls")]
                yield (f"{path.relative_to(REPO).as_posix()}:{node.name}",
                       node.end_lineno - node.lineno + 1, len(params))


def test_functions_are_small():
    long = [f"{name} ({n} lines)" for name, n, _ in _functions() if n > MAX_LINES]
    wide = sorted({name for name, _, p in _functions() if p > MAX_PARAMS})
    assert not long, f"functions over {MAX_LINES} lines: {long}"
    assert not wide, f"functions over {MAX_PARAMS} parameters: {wide} (group them in a record)"


def test_imports_of_the_package_are_at_the_top_unless_a_reason_is_given():
    """A function-level import of an lvae_jax module says why it is not at the top: a ``# lazy:``
    comment on the line, or a module that declares ``# lazy imports: <reason>`` (the command
    lines, which keep their start-up light)."""
    unexplained = []
    for path in sorted((REPO / "lvae_jax").rglob("*.py")):
        src = path.read_text()
        if "\n# lazy imports: " in src:
            continue
        lines = src.splitlines()
        for fn in ast.walk(ast.parse(src)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lvae_jax")
                        and "# lazy:" not in " ".join(lines[node.lineno - 1:node.end_lineno])):
                    unexplained.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not unexplained, f"function-level imports without a reason: {unexplained}"
