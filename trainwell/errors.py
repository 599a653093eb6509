"""User-facing errors.

Anything a user can cause (bad recipe, missing data, corrupt checkpoint, NaN loss, full disk)
is raised as a :class:`TrainwellError` whose message is one sentence saying what is wrong,
where, and how to fix it. The CLI prints the message and exits non-zero without a traceback.
"""


class TrainwellError(Exception):
    """An error caused by input the user can fix; the message is shown as-is."""

    exit_code = 2


class ConfigError(TrainwellError):
    """Malformed recipe, unknown key, wrong type or out-of-range value."""


class DataError(TrainwellError):
    """Missing, empty or unreadable data."""


class CheckpointError(TrainwellError):
    """A checkpoint is missing, corrupt, or does not match the run."""


class TrainingDiverged(TrainwellError):
    """The loss or gradient became NaN/Inf."""

    exit_code = 3
