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
