#!/usr/bin/env bash
# Set up lvae-jax in ./.venv (or in the active virtual environment if one is active).
# Installs the project with its [dev] and [tfds] extras from pyproject.toml, then the packages listed under
# [tool.lvae-jax] no-deps-requirements without their dependencies (see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  PY=.venv/bin/python
else
  PY=python
fi
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -e '.[dev,tfds]'
nodeps=$("$PY" - <<'PYEOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print(" ".join(tomllib.load(f)["tool"]["lvae-jax"]["no-deps-requirements"]))
PYEOF
)
"$PY" -m pip install -q --no-deps $nodeps
"$PY" -m lvae_jax doctor
