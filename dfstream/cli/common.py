"""What every ``dfstream`` subcommand module shares: user mistakes as one-line errors, ``-v``, and the
trainers' ``--device``."""
from __future__ import annotations

import logging

import click

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def one_line_error(exc: BaseException) -> click.ClickException:
    """The first line of an exception's message, as click's one-line error and non-zero exit."""
    return click.ClickException((str(exc).strip().splitlines() or [type(exc).__name__])[0])


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a user mistake (missing file, bad model, unreadable media), not a bug."""
    from engines.loader import MODEL_ERRORS
    from pipeline.stage import StageError

    return (FileNotFoundError, FileExistsError, ValueError, OSError, StageError, *MODEL_ERRORS)


def verbose_logging(verbose: bool) -> None:
    """``-v``: INFO logs. ``dfstream`` itself has already configured logging (``--log-level``), so the
    root level is raised here rather than through ``basicConfig``, which would do nothing then."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    if verbose:
        logging.getLogger().setLevel(logging.INFO)


def progress_bars(progress: bool | None):
    """The ``progress=`` callable of the trainers for a ``--progress/--no-progress`` flag
    (None: bars when stderr is a terminal)."""
    from train.common import progress as bar

    return lambda items, desc="": bar(items, desc=desc, disable=None if progress is None else not progress)


def device_option(default: str, note: str = ""):
    """The trainers' ``--device`` (:func:`train.common.training_device`), defaulting to their settings'."""
    return click.option("--device", default=default, show_default=True,
                        help="Where the network trains: cpu, cuda, cuda:N, or auto (the GPU when torch sees one)."
                             + (f" {note}" if note else ""))
