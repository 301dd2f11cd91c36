"""``python -m lvae_jax``: the lvae-jax command line (its subcommands: :mod:`lvae_jax.cli`).

    python -m lvae_jax quickstart                      # offline demo on embedded images and model
    python -m lvae_jax doctor                          # check the installation
"""

from __future__ import annotations

import sys

from lvae_jax import cli


def main(argv=None) -> int:
    return cli.COMMANDS.main(argv)


if __name__ == "__main__":
    sys.exit(main())
