"""The installation contract of pyproject.toml / scripts/setup.sh.

CompressAI 1.2.8 (the official range coder) pins numpy<2 while the JAX stack needs numpy 2, so it
is installed without its dependencies and only its compiled coder is loaded. These tests check that
the environment really is in the state the project declares, so a resolver change shows up here
rather than as a crash in the codec.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_declared_dependencies_are_installed_at_their_versions():
    bad = []
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    for spec in project["dependencies"] + extras["dev"] + extras["tfds"]:
        req = Requirement(spec)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            bad.append(f"{req.name}: not installed")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req.name}: {version} does not satisfy {req.specifier}")
    assert not bad, "environment differs from pyproject.toml (run scripts/setup.sh):\n" + "\n".join(bad)


def test_no_deps_requirements_installed_and_numpy_2_kept():
    for spec in _pyproject()["tool"]["lvae-jax"]["no-deps-requirements"]:
        req = Requirement(spec)
        version = metadata.version(req.name)
        assert req.specifier.contains(version), (req.name, version, str(req.specifier))
    import numpy
    # Installing compressai with its dependencies would have downgraded numpy below 2.
    assert int(numpy.__version__.split(".")[0]) >= 2, numpy.__version__


def test_range_coder_round_trips_under_numpy_2_in_a_fresh_interpreter():
    code = ("import numpy, sys; from lvae_jax.entropy import coder; "
            "print(numpy.__version__); print(coder.self_test()); "
            "assert 'compressai' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    numpy_version, result = proc.stdout.strip().splitlines()[-2:]
    assert int(numpy_version.split(".")[0]) >= 2
    assert "round trip ok" in result


def test_doctor_passes():
    proc = subprocess.run([sys.executable, "-m", "lvae_jax", "doctor"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout


def test_readme_is_two_commands_and_ci_runs_its_test_command():
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./lvae quickstart", "./lvae test"]
    ci = [line.strip() for line in (repo / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "echo", "set ", "cd "))]
    assert ci and ci[-1].removeprefix("time ") == "./lvae test"
    wrapper = (repo / "lvae").read_text()
    # set-up when needed (a missing .venv or a changed pyproject.toml), then the command
    assert "scripts/setup.sh" in wrapper and "pyproject.toml" in wrapper
    assert "-m pytest" in wrapper and "-m lvae_jax" in wrapper
