"""The one error of training (its own module: every part of the training package raises it)."""


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, a run directory that does not fit ...)."""
