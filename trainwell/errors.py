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


class UnexpectedError(TrainwellError):
    """Anything else that went wrong: one sentence on the console, the traceback in a log file."""


def unexpected(error: BaseException, doing: str, log_dir: "object | None" = None) -> UnexpectedError:
    """An exception no check anticipated, as one sentence that points at the config, with the
    traceback written to ``log_dir/error.log`` (or a file in the temporary folder) for a bug report."""
    import os
    import tempfile
    import traceback
    from pathlib import Path

    rank = os.environ.get("RANK", "0")
    name = "error.log" if rank == "0" else f"error-rank{rank}.log"
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    path: Path | None = None
    for folder in ([Path(str(log_dir))] if log_dir is not None else []) + [Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / (name if folder != Path(tempfile.gettempdir()) else f"trainwell-{os.getpid()}-{name}")
            path.write_text(text, encoding="utf-8")
            break
        except OSError:
            path = None
    first = (str(error).strip().splitlines() or [""])[0][:200]
    what = f"{type(error).__name__}: {first}" if first else type(error).__name__
    kept = f"the traceback is in {path}" if path else "the traceback could not be written"
    return UnexpectedError(f"{doing} failed with {what}; this is most likely a combination of settings that "
                           f"trainwell does not check yet — review the keys you set (`trainwell check` prints "
                           f"them all), and {kept} for a bug report.")
