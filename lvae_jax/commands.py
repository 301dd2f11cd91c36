"""The one command-line style of lvae-jax: a command is a function registered with its arguments.

Every command line — ``python -m lvae_jax`` (compress, decompress, the generative tools, ...),
``python -m eval``, ``python -m train``, ``python -m convert`` — declares its arguments as data
(:func:`arg`, :func:`group`) next to the function that runs them, and shares the error rule: bad
input (any ``ValueError`` / ``OSError`` of the library, a :class:`UsageError`, an out-of-memory)
ends with one ``error:`` line and exit status 2, nothing half-written.

    >>> commands = CommandSet("python -m tool", "what the tool does")
    >>> @commands.command("echo", "print a word", arg("word"), arg("--times", type=int, default=1))
    ... def echo(args) -> int:
    ...     '''Print WORD, TIMES times.'''
    ...     print(args.word * args.times)
    >>> commands.main(["echo", "ab", "--times", "2"])
    abab
    0

A program with a single command (``train``, ``convert``) is a :class:`Program`: the same
arguments and rule, no subcommand. Nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence


class UsageError(Exception):
    """Bad command-line input that argparse cannot see (exit status 2)."""


class Arg(NamedTuple):
    """One ``parser.add_argument(*flags, **kwargs)``."""
    flags: tuple[str, ...]
    kwargs: dict[str, Any]


class Group(NamedTuple):
    """Arguments shown under ``title`` (``exclusive``: at most one of them may be given)."""
    title: str | None
    args: tuple
    exclusive: bool = False


def arg(*flags: str, **kwargs: Any) -> Arg:
    return Arg(flags, kwargs)


def group(*args: Arg | Group, title: str | None = None, exclusive: bool = False) -> Group:
    return Group(title, args, exclusive)


def model_arg(**kwargs: Any) -> Arg:
    """``--model SPEC``, the same on every command that loads a model: an official model with its
    official weights (:mod:`lvae_jax.checkpoint.pretrained`), or with ``--ckpt`` the model the
    directory must hold."""
    return arg("--model", metavar="NAME", **{"help": (
        "an official model with its official weights (qarv_base, qres34m-lmb64, …; "
        "`python -m lvae_jax models` lists them), downloaded and converted once; with --ckpt: "
        "the model DIR must hold"), **kwargs})


def add_arguments(parser, args: Sequence[Arg | Group]) -> None:
    """Add the declared arguments (and groups) to an argparse parser."""
    for a in args:
        if isinstance(a, Group):
            if a.exclusive:
                target = parser
                if a.title:
                    target = parser.add_argument_group(a.title)
                add_arguments(target.add_mutually_exclusive_group(), a.args)
            else:
                add_arguments(parser.add_argument_group(a.title), a.args)
        else:
            parser.add_argument(*a.flags, **a.kwargs)


def _out_of_memory(e: BaseException) -> str | None:
    text = str(e)
    if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text:
        return ("out of memory: the input is too large for this machine (the size check estimated "
                "it would fit; lower --max-memory / LVAE_MAX_MEMORY to be stricter, or use a "
                "smaller image)")
    return None


#: Research forks' modules to import before any command runs (docs/extending.md).
PLUGINS_ENV = "LVAE_PLUGINS"


def load_plugins(names: str | None = None) -> list[str]:
    """Import the modules of ``names`` (default ``$LVAE_PLUGINS``): comma-separated module names
    (``examples.se_block``) or paths of ``.py`` files, each once. A fork's module registers its
    block types and model names when imported."""
    text = os.environ.get(PLUGINS_ENV, "") if names is None else names
    loaded = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        if name.endswith(".py") or os.sep in name:
            path = Path(name).expanduser().resolve()
            module = f"lvae_plugin_{path.stem}"
            if module not in sys.modules:
                if not path.is_file():
                    raise ValueError(f"{PLUGINS_ENV}: {name}: no such file")
                spec = importlib.util.spec_from_file_location(module, path)
                sys.modules[module] = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(sys.modules[module])
        else:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                raise ValueError(f"{PLUGINS_ENV}: cannot import {name!r} ({e})") from None
        loaded.append(name)
    return loaded


def run_guarded(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                prog: str) -> int:
    """``run(args)`` under the shared error rule -> exit status (the plugins of
    ``$LVAE_PLUGINS`` imported first)."""
    try:
        load_plugins()
        return run(args) or 0
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:    # every bad-input error of the library is one of these
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:                # JAX's out-of-memory, MemoryError: explained, one line
        why = _out_of_memory(e)
        if why is None:
            raise
        print(f"error: {why}", file=sys.stderr)
        return 2


class Command(NamedTuple):
    help: str
    args: tuple
    run: Callable[[argparse.Namespace], int | None]


class CommandSet:
    """Subcommands in ``--help`` order. ``before(args)`` (optional) runs before any command, e.g.
    to enable the compilation cache."""

    def __init__(self, prog: str, description: str, epilog: str | None = None,
                 before: Callable[[argparse.Namespace], None] | None = None):
        self.prog, self.description, self.epilog, self.before = prog, description, epilog, before
        self.commands: dict[str, Command] = {}

    # a read-only mapping of name -> Command
    def __iter__(self):
        return iter(self.commands)

    def __len__(self) -> int:
        return len(self.commands)

    def __getitem__(self, name: str) -> Command:
        return self.commands[name]

    def __contains__(self, name) -> bool:
        return name in self.commands

    def items(self):
        return self.commands.items()

    def command(self, name: str, help: str, *args: Arg | Group):
        """Register the decorated ``fn(args) -> exit status`` as subcommand ``name``."""
        def register(fn):
            self.add(name, Command(help, args, fn))
            return fn
        return register

    def add(self, name: str, command: Command) -> None:
        if name in self.commands:
            raise ValueError(f"subcommand {name!r} is registered twice")
        self.commands[name] = command

    def include(self, other: "CommandSet") -> None:
        """Add all of ``other``'s commands (e.g. the generative tools into ``python -m lvae_jax``)."""
        for name, c in other.commands.items():
            self.add(name, c)

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description,
                                         epilog=self.epilog,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for name, c in self.commands.items():
            add_arguments(sub.add_parser(name, help=c.help, description=c.run.__doc__ or c.help),
                          c.args)
        return parser

    def main(self, argv=None) -> int:
        args = self.parser().parse_args(argv)
        command = self.commands[args.command]

        def run(a):
            if self.before is not None:
                self.before(a)
            return command.run(a)
        return run_guarded(run, args, f"{self.prog} {args.command}")


class Program:
    """A command line with one command: ``run(args)`` over the declared arguments."""

    def __init__(self, prog: str, description: str, args: Sequence[Arg | Group],
                 run: Callable[[argparse.Namespace], int | None], epilog: str | None = None,
                 argument_default: Any = None):
        self.prog, self.description, self.args, self.run = prog, description, tuple(args), run
        self.epilog, self.argument_default = epilog, argument_default

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog=self.prog, description=self.description,
                                    epilog=self.epilog, argument_default=self.argument_default,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p, self.args)
        return p

    def main(self, argv=None) -> int:
        return run_guarded(self.run, self.parser().parse_args(argv), self.prog)
