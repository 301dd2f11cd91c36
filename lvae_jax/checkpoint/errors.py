"""The one error of everything checkpoint-shaped: model directories, official ``.pt`` files,
training checkpoints."""


class CheckpointError(ValueError):
    """A model directory or training checkpoint is missing, malformed, corrupt, or does not fit
    the model or run it is loaded into."""
