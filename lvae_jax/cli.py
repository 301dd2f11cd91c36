"""Subcommands of ``python -m lvae_jax``: each is (help, add_arguments, run)."""

from __future__ import annotations


def _doctor_args(p):
    pass


def _doctor(args) -> int:
    from lvae_jax.doctor import run
    return run()


COMMANDS = {
    "doctor": ("check the installation (versions, devices, the range coder)", _doctor_args, _doctor),
}
