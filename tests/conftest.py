"""Test-session set-up: the tests' helpers on ``sys.path``, one persistent compilation cache for
every worker and subprocess, the parity models converted once per session, and how the tests are
shared among the xdist workers.

Units of work (:func:`work_unit`): a test file — its module-scoped fixtures (compiled tiny models)
are built once — except the parity tests, which form one unit per official model across
``test_parity.py`` and ``test_codec_parity.py``, so that each model is rebuilt, converted and
compiled once, in one worker. Units run heaviest first (:data:`HEAVY_FIRST`), then in file
order, so that no long unit starts last. (xdist's own ``--dist=loadgroup`` cannot be used: it
marks groups by rewriting node ids, which pytest 9.2 no longer reads — pytest-xdist#1386.)
"""

import functools
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Make tests/ helpers (parity_support, tiny_models, ...) importable as plain modules.
sys.path.insert(0, str(TESTS))

#: One persistent compilation cache for the session: the pytest workers (in-process programs)
#: and every subprocess they start (command lines, training workers) share compiled programs —
#: a program one of them compiled is loaded, not compiled again, by the others.
XLA_CACHE = REPO / ".pytest_cache" / "xla"
os.environ.setdefault("LVAE_CACHE_DIR", str(XLA_CACHE))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["LVAE_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

#: Every program of the session — in the workers and in every subprocess they start — is compiled
#: without LLVM's optimisations: the tests' small inputs run in milliseconds either way, and
#: compilation is most of the suite's time (−35 % for the codec and generative tests, measured:
#: docs/benchmarks.md "Test suite"). The optimisation level changes machine code, not the
#: arithmetic the tests check beyond float32 reassociation, which every tolerance allows for; the
#: exact checks (decode = evaluation reconstruction, lossless, bitstream bytes) compare programs
#: compiled alike. A value already in ``XLA_FLAGS`` is left as it is (e.g. to run the suite
#: at XLA's default level: ``XLA_FLAGS=--xla_backend_optimization_level=2 ./lvae test``). The
#: caller's own value stays in ``LVAE_TESTS_CALLER_XLA_FLAGS`` for the few subprocesses whose
#: run time, not compilation, is their cost (test_tiles.py's large images).
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0",)
_flags = os.environ.setdefault("LVAE_TESTS_CALLER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
os.environ["XLA_FLAGS"] = " ".join(
    [_flags, *(f for f in TEST_XLA_FLAGS if f.split("=")[0] not in _flags)]).strip()

#: The files whose tests are grouped by official model.
PARITY_FILES = ("test_parity.py", "test_codec_parity.py")
#: Units of work by decreasing cost (measured): started first.
HEAVY_FIRST = ("parity-rd_model_base", "parity-qarv_base", "parity-qres34m_lossless",
               "parity-qres34m", "tests/test_training.py", "tests/test_codec.py",
               "parity-qres17m", "tests/test_training_distributed.py", "tests/test_generative.py",
               "tests/test_tiles.py", "tests/test_convert.py", "tests/test_kill_writes.py")


def work_unit(nodeid: str) -> str:
    """The unit of work of a test: ``parity-<model>`` (``…@<digest>`` for recordings of other
    weights, see parity_support.discover) for a parity test of one official model, else its file.
    Derived from the node id alone: the xdist controller, which collects nothing, uses it too."""
    path, _, rest = nodeid.partition("::")
    if Path(path).name not in PARITY_FILES or not rest.endswith("]") or "[" not in rest:
        return path
    param = rest[rest.index("[") + 1:-1]
    from lvae_jax.models.registry import MODELS
    model = next((m for m in sorted(MODELS, key=len, reverse=True)
                  if param == m or param.startswith(m + "_")), param)
    return f"parity-{model}" + (param[param.rindex("@"):] if "@" in param else "")


def pytest_collection_modifyitems(config, items):
    """Order the tests by unit of work (stable: file order within a unit), heaviest units first;
    with ``-n 0`` too, so that each parity model is converted once."""
    first: dict[str, int] = {}
    for item in items:
        unit = work_unit(item.nodeid)
        first.setdefault(unit, len(first))
        if unit.startswith("parity-"):          # full-size models: compiled programs of minutes
            item.add_marker(pytest.mark.slow)
    rank = {u: (HEAVY_FIRST.index(u) if u in HEAVY_FIRST else len(HEAVY_FIRST), i)
            for u, i in first.items()}
    items.sort(key=lambda it: rank[work_unit(it.nodeid)])


def pytest_xdist_make_scheduler(config, log):
    """``--dist=loadfile`` by :func:`work_unit` (files, parity tests by model), in collection
    order; any other ``--dist`` is xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False        # keep the order of the collection
    return UnitScheduling(config, log)


@pytest.fixture(scope="module")
def cli_processes(tmp_path_factory):
    """A fork server (tests/fork_server.py) with the command line imported: ``.cli(*args)`` runs
    ``python -m lvae_jax ARGS`` in a process of its own without an interpreter's start-up."""
    from fork_server import CLI_PRELOAD, ForkServer
    with ForkServer(CLI_PRELOAD, tmp_path_factory.mktemp("cli_processes"), REPO) as server:
        yield server


@pytest.fixture(scope="module")
def cli(cli_processes):
    """``cli(*args, **kw)``: ``python -m lvae_jax ARGS`` as a process of its own (forked, see
    ``cli_processes``), its output as text -> returncode, stdout, stderr."""
    return functools.partial(cli_processes.cli, text=True)


@pytest.fixture(scope="session")
def parity_models(tmp_path_factory):
    """The official models rebuilt from the parity manifests, converted once per session."""
    from parity_models import Store
    store = Store(tmp_path_factory.mktemp("parity"))
    yield store
    store.close()
