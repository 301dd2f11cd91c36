"""``python -m lvae_jax``: the lvae-jax command line.

    python -m lvae_jax quickstart                      # offline demo on embedded images and model
    python -m lvae_jax doctor                          # check the installation
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from lvae_jax import cli
    parser = argparse.ArgumentParser(prog="python -m lvae_jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, _) in cli.COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    args = parser.parse_args(argv)
    if args.command != "doctor":
        from lvae_jax.runtime import enable_compilation_cache
        enable_compilation_cache()
    return cli.COMMANDS[args.command][2](args) or 0


if __name__ == "__main__":
    sys.exit(main())
