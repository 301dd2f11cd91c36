"""Child processes without the start-up: a server process imports the heavy modules once, then
runs each job in a child forked from it (:class:`ForkServer`).

A test that needs a real process — one that is killed mid-write, or whose exit status is the
check — pays about two seconds of imports (JAX, Flax, Orbax, lvae-jax) per fresh interpreter.
Forked from a server that has imported them, the child starts in milliseconds and runs the same
code from the same modules; everything after the imports (the JAX backend, compilations, files) is
its own. The server never starts a JAX backend (``jax`` creates none at import), so nothing
multi-threaded of XLA's is forked.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_SERVER = r"""
import importlib, json, os, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)                       # anything else printed here stays off the reply channel
sys.stdout.flush()                  # and nothing the imports printed is left for children to copy
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            os.dup2(os.open(job["stdin"], os.O_RDONLY), 0)
            os.chdir(job["cwd"])
            for k, v in job["env"].items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            sys.argv = ["-c", *job["argv"]]
            exec(compile(job["code"], "<job>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), file=reply, flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=reply, flush=True)
"""


@dataclass(frozen=True)
class Result:
    """What a job did: ``returncode`` as :mod:`subprocess` reports it (``-signal`` if killed),
    its standard output and standard error."""
    returncode: int
    stdout: bytes | str
    stderr: bytes | str


#: A job that runs ``python -m MODULE ARGS`` (``sys.argv[1]`` is MODULE) as the interpreter does.
RUN_MODULE = ("import runpy, sys\n"
              "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n")
#: What the command lines import (the codec, model directories, images). Not their ``__main__``
#: modules: :data:`RUN_MODULE` executes those afresh, as ``python -m`` does.
CLI_PRELOAD = ("numpy", "PIL.Image", "jax", "flax.nnx", "lvae_jax", "lvae_jax.cli",
               "lvae_jax.commands", "lvae_jax.codec.api", "lvae_jax.checkpoint.model_dir",
               "lvae_jax.image")


class ForkServer:
    """``run(code, *argv)`` executes ``code`` (a script, ``__name__ == "__main__"``,
    ``sys.argv[1:] == argv``) in a child forked from a server that imported ``preload``.
    One job at a time; use as a context manager (or :meth:`close`). ``log_dir``: where each job's
    standard streams are kept; ``cwd``: the jobs' default working directory."""

    def __init__(self, preload, log_dir: Path, cwd: Path):
        # the server inherits this process's environment: the session's XLA flags and cache
        self.log_dir, self.cwd, self._jobs = Path(log_dir), Path(cwd), 0
        # unbuffered byte pipes: a reply line must not wait in a read-ahead buffer that
        # select() cannot see
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER, json.dumps(list(preload))],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                      cwd=cwd)

    def _reply(self, timeout: float) -> dict:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else b""      # raw: up to the newline
        if not line:
            raise TimeoutError(f"no reply from the fork server within {timeout} s")
        return json.loads(line)

    def run(self, code: str, *argv, cwd: Path | None = None, stdin: bytes | Path | None = None,
            env: dict | None = None, timeout: float = 300, text: bool = False) -> Result:
        """Run ``code`` with ``argv``; ``stdin``: bytes, a file to read (e.g. ``/dev/zero``) or
        nothing (``/dev/null``); ``env``: variables set in the child (``None``: removed; those a
        preloaded module reads when it is imported, such as ``JAX_*``, keep the server's
        values); ``text``: standard output and error decoded (UTF-8), else bytes."""
        self._jobs += 1
        base = self.log_dir / f"job{self._jobs}"
        out, err = base.with_suffix(".out"), base.with_suffix(".err")
        if isinstance(stdin, bytes):
            base.with_suffix(".in").write_bytes(stdin)
            stdin = base.with_suffix(".in")
        job = {"code": code, "argv": [str(a) for a in argv], "cwd": str(cwd or self.cwd),
               "stdin": str(stdin or os.devnull), "stdout": str(out), "stderr": str(err),
               "env": env or {}}
        request = memoryview((json.dumps(job) + "\n").encode())
        while request:                                  # a raw pipe may take it in parts
            request = request[self._proc.stdin.write(request):]
        pid = self._reply(60)["pid"]
        try:
            done = self._reply(timeout)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._reply(60)
            raise
        streams = [out.read_bytes(), err.read_bytes()]
        if text:
            streams = [b.decode("utf-8", errors="replace") for b in streams]
        return Result(done["returncode"], *streams)

    def module(self, name: str, *args, **kw) -> Result:
        """``python -m NAME ARGS`` (:data:`RUN_MODULE`); keywords as :meth:`run`."""
        return self.run(RUN_MODULE, name, *args, **kw)

    def cli(self, *args, **kw) -> Result:
        """``python -m lvae_jax ARGS``; keywords as :meth:`run`."""
        return self.module("lvae_jax", *args, **kw)

    def close(self):
        try:
            self._proc.stdin.close()
            self._proc.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
