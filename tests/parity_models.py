"""Official checkpoints rebuilt from a parity manifest, fetched by name through a local stand-in
of the Hugging Face hub (the real download and conversion path, in a process of its own) once per
manifest and test session (:class:`Store`, the session fixture ``parity_models`` of
``conftest.py``).

The collection hook of ``conftest.py`` runs the parity tests of one manifest one after another
(and sends them to one xdist worker), so the store keeps only the most recent model: the largest,
rd_model_base, is 0.75 GB of weights.
"""

from __future__ import annotations

import functools
import gc
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from fork_server import ForkServer
from hub_mirror import HubMirror
from parity_support import REPO

#: What the fetching process runs: the official model by name, as a user would (``pretrained=True``
#: downloads, verifies and converts it into the models cache), then prints its weights' digest,
#: its name and the cache entry it was loaded from (a JSON list, on its last line).
_FETCH = ("import json, sys, lvae_jax\n"
          "from lvae_jax.checkpoint.pretrained import pretrained_dir\n"
          "name, args = sys.argv[1], json.loads(sys.argv[2])\n"
          "m = lvae_jax.get_model(name, pretrained=True, **args)\n"
          "print(json.dumps([m.weights_sha256, m.config.name, str(pretrained_dir(name, **args))]))")


@dataclass(frozen=True)
class Fetch:
    """The outcome of fetching a model by name in a process of its own (:func:`fetch_by_name`)."""
    returncode: int
    stdout: str
    stderr: str
    models_cache: Path          # the LVAE_MODELS_DIR it was given

    @property
    def printed(self) -> tuple[str, str, Path] | None:
        """(weights digest, model name, models-cache entry) the process printed; None if it
        failed."""
        if self.returncode != 0 or not self.stdout.strip():
            return None
        sha, name, where = json.loads(self.stdout.strip().splitlines()[-1])
        return sha, name, Path(where)

    @property
    def model_dir(self) -> Path | None:
        """The models-cache entry the process loaded, or None if it failed."""
        return self.printed[2] if self.printed else None


#: What the fetching processes' server imports: JAX, lvae-jax and the converter's PyTorch reader —
#: not the hub client, which reads its settings (HF_ENDPOINT, HF_HOME) when it is imported.
PRELOAD = ("numpy", "jax", "flax.nnx", "torch", "lvae_jax", "lvae_jax.checkpoint.torch_io",
           "lvae_jax.checkpoint.model_dir")


def fetch_server(log_dir: Path) -> ForkServer:
    """The fork server (tests/fork_server.py) that :func:`fetch_by_name` runs its processes from."""
    return ForkServer(PRELOAD, log_dir, REPO)


def fetch_by_name(manifest, pt: Path, tmp_dir: Path, server: ForkServer) -> Fetch:
    """``get_model(name, pretrained=True)`` in a process of its own (forked from ``server``, which
    has imported nothing of the download path's state) against a local hub stand-in
    (tests/hub_mirror.py) serving ``pt`` under the model's official path, with its own hub and
    models caches under ``tmp_dir`` and nothing else reachable."""
    from lvae_jax.models.registry import MODELS, OFFICIAL_REPO
    entry = MODELS[manifest.model]
    args = {entry.weights_arg: manifest.args[entry.weights_arg]} if entry.weights_arg else {}
    file = entry.file_for(**args)
    models_cache = tmp_dir / "models"
    env = dict(HF_HOME=str(tmp_dir / "hf"), LVAE_MODELS_DIR=str(models_cache),
               HF_HUB_DISABLE_TELEMETRY="1")
    with HubMirror({OFFICIAL_REPO: {file.path: pt}}) as hub:
        env["HF_ENDPOINT"] = hub.url
        r = server.run(_FETCH, manifest.model, json.dumps(args), env=env, text=True, timeout=600)
    return Fetch(r.returncode, r.stdout, r.stderr, models_cache)


class Converted:
    """An official checkpoint rebuilt from the recipe, written as the official ``.pt``, fetched by
    name from the hub stand-in (:func:`fetch_by_name`: downloaded and converted by the real
    converter, once), loaded here, with its jitted functions (each compiled once per input
    shape). Should the fetch fail, the ``.pt`` is converted here instead, so that the other
    parity tests still run; the hub test reports the failure."""

    def __init__(self, manifest, tmp_dir: Path, server: ForkServer):
        from lvae_jax import load_model
        from lvae_jax.checkpoint.torch_io import convert_torch_to_model, write_torch_checkpoint
        self.manifest, self.tmp_dir = manifest, tmp_dir
        self.state_dict = manifest.rebuild_state_dict()
        self.pt = write_torch_checkpoint(self.state_dict, tmp_dir / f"{manifest.model}.pt")
        self.fetch = fetch_by_name(manifest, self.pt, tmp_dir, server)
        self.model_dir = self.fetch.model_dir or convert_torch_to_model(
            self.pt, tmp_dir / f"{manifest.model}_jax", lmb=manifest.args.get("lmb")).out_dir
        self.model = load_model(self.model_dir)
        self.graphdef, self.params = nnx.split(self.model)
        self._fns = {}

    @functools.cached_property
    def codec(self):
        """The codec of the model (QRes and QARV), built once."""
        from lvae_jax.codec.api import Codec
        return Codec(self.model)

    def fn(self, name):
        """The jitted ``eval`` (free running), ``eval_tf`` (teacher forced) or ``train`` (loss,
        outputs and gradients with the given noise) function over the split parameters."""
        if name not in self._fns:
            g = self.graphdef
            jit = jax.jit            # at the session's optimisation level (conftest.py)
            if name == "eval":
                self._fns[name] = jit(lambda p, im, lmb: nnx.merge(g, p)(im, lmb, training=False))
            elif name == "eval_tf":
                self._fns[name] = jit(lambda p, im, lmb, zs: nnx.merge(g, p)(im, lmb, training=False,
                                                                              latents=zs))
            elif name == "train":
                def loss(p, im, lmb, noise):
                    out = nnx.merge(g, p)(im, lmb, training=True, noise=noise)
                    return out.loss, out

                self._fns[name] = jit(jax.value_and_grad(loss, has_aux=True))
        return self._fns[name]


class Store:
    """Converted models by manifest (its content digest): each converted once per session; the
    most recent ``keep`` are held, and the files of one let go are deleted (a full-size model's
    checkpoint, hub download and cache entry take gigabytes). The fetching processes are forked
    from one server (:func:`fetch_server`), started at the first model; :meth:`close` stops it."""

    def __init__(self, tmp_dir: Path, keep: int = 1):
        self.tmp_dir, self.keep = Path(tmp_dir), keep
        self._models: dict[str, Converted] = {}
        self._server: ForkServer | None = None
        self.conversions = 0

    def close(self):
        if self._server is not None:
            self._server.close()
            self._server = None

    def get(self, manifest) -> Converted:
        key = manifest.digest
        if key in self._models:
            self._models[key] = self._models.pop(key)          # most recent last
            return self._models[key]
        while len(self._models) >= self.keep:
            gone = self._models.pop(next(iter(self._models)))
            shutil.rmtree(gone.tmp_dir, ignore_errors=True)
            del gone
            gc.collect()
        where = self.tmp_dir / f"{manifest.model}-{key[:12]}"
        where.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            (self.tmp_dir / "fetch_logs").mkdir(exist_ok=True)
            self._server = fetch_server(self.tmp_dir / "fetch_logs")
        self._models[key] = Converted(manifest, where, self._server)
        self.conversions += 1
        return self._models[key]
