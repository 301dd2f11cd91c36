"""The official results that ship with lvae-jax: the RD curves of the official models and the
VTM 18.0 anchors on Kodak, Tecnick (RGB 1200) and CLIC 2022 (figures only, in the official
results schema), addressable by name.

    >>> from lvae_jax.evaluation.official_results import resolve, names
    >>> names()[:3]
    ['clic2022-test/qarv_base', 'clic2022-test/qres34m', 'clic2022-test/vtm18.0']
    >>> resolve("kodak/vtm18.0")          # -> the packaged JSON file
    >>> resolve("my-anchor.json")         # a path is a path (it must exist)

A name is ``<test set>/<curve>``: the file ``results/<test set>/<test set>-<curve>.json`` of the
package. ``python -m eval anchors`` lists them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Test sets with a VTM 18.0 anchor (the folder names of the official results).
TEST_SETS = ("kodak", "tecnick-rgb-1200", "clic2022-test")


class UnknownResult(FileNotFoundError):
    """Neither an existing file nor the name of a packaged result."""


def results_dir() -> Path:
    """The packaged ``results`` folder."""
    return Path(str(resources.files("lvae_jax").joinpath("results")))


def names() -> list[str]:
    """Every packaged result, as ``<test set>/<curve>``."""
    out = []
    for f in sorted(results_dir().glob("*/*.json")):
        test_set = f.parent.name
        curve = f.stem[len(test_set) + 1:] if f.stem.startswith(test_set + "-") else f.stem
        out.append(f"{test_set}/{curve}")
    return out


def path_of(name: str) -> Path | None:
    """The packaged file of ``<test set>/<curve>``, or None."""
    if name.count("/") != 1:
        return None
    test_set, curve = name.split("/")
    p = results_dir() / test_set / f"{test_set}-{curve}.json"
    return p if p.is_file() else None


def resolve(spec) -> Path:
    """A result file from a path or a packaged name; raises :class:`UnknownResult` naming the
    known names when it is neither."""
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    packaged = path_of(str(spec))
    if packaged is not None:
        return packaged
    raise UnknownResult(f"{spec}: no such file, and not a packaged result (known: "
                        f"{', '.join(names())}; `python -m eval anchors` lists them)")


def test_set_of(path) -> str | None:
    """The test set of a packaged result file (its folder), or None for any other file."""
    p = Path(path).resolve()
    root = results_dir().resolve()
    return p.parent.name if p.parent.parent == root else None


def anchor_for(test_set: str) -> Path | None:
    """The VTM 18.0 anchor of a known test set, or None."""
    return path_of(f"{test_set}/vtm18.0")
