"""Mixed precision of the training step (``TrainConfig.precision``).

``"fp32"``: the official arithmetic, float32 throughout. ``"bf16"``: the parameters, the
optimizer state and the EMA stay float32; the step casts a bfloat16 copy of the parameters for
the forward and backward passes, so every convolution, matmul and activation runs in bfloat16
(each layer computes in its parameters' dtype, :mod:`lvae_jax.nn.layers`) and the gradients
arrive in float32 through the cast. What :mod:`lvae_jax.numerics` pins stays float32: the prior
and posterior parameters and everything computed from them (rates, likelihood bounds, the
Gaussian CDFs; ``numerics.pinned``), layer-norm statistics and the distortion. Evaluation, the
codec and exported models are float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: The compute dtype of each precision.
COMPUTE_DTYPE = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def compute_params(params, precision: str):
    """The parameters in the compute dtype of ``precision`` (float32: unchanged)."""
    dtype = COMPUTE_DTYPE[precision]
    if dtype == jnp.float32:
        return params
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                        params)
