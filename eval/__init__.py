"""``python -m eval``: the evaluation command line of lvae-jax (a thin layer over
:mod:`lvae_jax.evaluation`, where all the logic lives).

Subcommands are registered in :data:`eval.__main__.COMMANDS` by the :func:`eval.__main__.command`
decorator: one function per subcommand, its arguments declared with ``arg(...)`` (the arguments of
``argparse.ArgumentParser.add_argument``), returning the exit status::

    @command("rd", "RD curve of a model from real bitstreams on an image folder",
             arg("model", help="model directory"),
             arg("images", help="image folder or tfds:NAME"),
             arg("--out", required=True, help="results JSON to write"))
    def rd(args) -> int:
        from lvae_jax.evaluation import ...     # import the library inside the function
        ...
        return 0

The function's docstring becomes the subcommand's ``--help`` description. Keep heavy imports
(jax, matplotlib, imagecodecs, tensorflow) inside the functions so that ``--help`` stays instant.
"""
