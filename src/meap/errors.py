"""User-facing errors and warnings: one line that names the file or key and says what is expected.

The CLI prints `meap: error: <message>` and exits with status 2 for a :class:`UserError`; anything else
is a bug and keeps its traceback. :func:`warn` prints `meap: warning: <message>` and carries on.
"""

import logging
import os
import sys


class UserError(Exception):
    """Bad input from the user (a path, a file's contents, a config key or value)."""

    rank_local = False  # raised by one process of a job alone (else every process raises it alike)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``str()`` says what was kept and how to continue."""


def error_summary(error: BaseException) -> str:
    """The first line of a library error's message (its type's name when it has none), for a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def did_you_mean(word: str, known, cutoff: float = 0.5, shown=None) -> str:
    """`` (did you mean `x`?)`` naming the closest of ``known`` to a mistyped ``word`` ("" when none is
    close); ``shown`` turns the match into what the user types (a key into its flag, say)."""
    import difflib

    match = difflib.get_close_matches(word, list(known), n=1, cutoff=cutoff)
    return f" (did you mean `{shown(match[0]) if shown else match[0]}`?)" if match else ""


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun / accelerate launch (which set RANK)."""
    return os.environ.get("RANK", "0") == "0"


def error_line(error: UserError) -> str | None:
    """The line to print for ``error`` on this process: once per job (by rank 0) for an error every process
    raises alike, by the process that raised it, naming its rank, for one that only it met."""
    rank, world_size = os.environ.get("RANK", "0"), int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and error.rank_local:
        return f"meap: error: rank {rank}: {error}"
    return f"meap: error: {error}" if is_main_process() else None


def warn(message: str) -> None:
    """Tell the user about a questionable but workable setting, on one line of stderr (once per job)."""
    if is_main_process():
        print(f"meap: warning: {message}", file=sys.stderr)


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``message_start``."""

    def __init__(self, message_start: str):
        super().__init__()
        self.message_start = message_start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.message_start)


def drop_library_message(logger_name: str, message_start: str) -> None:
    """Silence a library's log message that describes how meap calls it, or that a check of meap's own says
    better (idempotent: one filter per message)."""
    logger = logging.getLogger(logger_name)
    if not any(getattr(known, "message_start", None) == message_start for known in logger.filters):
        logger.addFilter(_DropMessage(message_start))
