"""Data parallelism with ``jax.jit`` over a one-axis device mesh.

The mesh is ``jax.make_mesh((n,), ("data",))`` over every device of every process; the batch is
sharded along it (``NamedSharding(mesh, P("data"))``) and the training state is replicated
(``P()``). XLA inserts the gradient all-reduce. With several processes (``jax.distributed``),
each process loads only the rows of the global batch that live on its own devices and the global
array is assembled with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from lvae_jax.training.errors import TrainingError

log = logging.getLogger(__name__)

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """``jax.distributed.initialize``; with no arguments the cluster is auto-detected (TPU pods,
    SLURM, ...). Must run before any other JAX call."""
    kwargs = {k: v for k, v in dict(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id).items()
              if v is not None}
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:
        if "before any JAX" in str(e):
            raise TrainingError(f"--tpu/--distributed must start before any JAX computation in "
                                f"this process (run training as its own process): {e}") from None
        where = ("no cluster was detected (not a TPU pod slice, SLURM job or other environment "
                 "jax.distributed recognises)" if not kwargs else "the cluster could not be joined")
        raise TrainingError(
            f"--tpu/--distributed: {where}: {str(e).rstrip('.')}. On one machine, leave --tpu out "
            "(every local device is used anyway); by hand, give --coordinator-address HOST:PORT "
            "--num-processes N --process-id I") from None
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def make_data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A ("data",) mesh over ``num_devices`` devices (default: all of them, every process)."""
    n = num_devices or jax.device_count()
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def process_rows(mesh, global_batch: int) -> slice:
    """The rows of a global batch that live on this process's devices (a contiguous slice)."""
    if global_batch % mesh.size:
        raise ValueError(f"global batch {global_batch} is not divisible by {mesh.size} devices")
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    rows = sorted({r for idx in index_map.values() for r in range(*idx[0].indices(global_batch))})
    if rows != list(range(rows[0], rows[-1] + 1)):
        raise ValueError(f"this process's devices hold non-contiguous batch rows {rows}")
    return slice(rows[0], rows[-1] + 1)


def global_batch_array(local_rows: np.ndarray, mesh, global_batch: int) -> jax.Array:
    """This process's rows -> the global, data-sharded batch."""
    shape = (global_batch, *local_rows.shape[1:])
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows, shape)


def replicate(tree, mesh):
    """Place every leaf (host values, identical on all processes) replicated on the mesh."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def to_host(tree):
    """Fully replicated (or single-device) arrays -> numpy, without cross-process gathers."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(get, tree)


def local_copy(tree):
    """Replicated arrays -> copies on this process's first device (for work done by one process,
    such as evaluation, while the others wait)."""
    dev = jax.local_devices()[0]

    def get(x):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
            x = x.addressable_data(0)
        return jax.device_put(x, dev)

    return jax.tree.map(get, tree)
