"""``python -m convert``: official PyTorch checkpoints <-> lvae-jax model directories."""
