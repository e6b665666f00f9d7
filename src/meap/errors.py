"""User-facing errors and warnings: one line that names the file or key and says what is expected.

The CLI prints `meap: error: <message>` and exits with status 2 for a :class:`UserError`; anything else
is a bug and keeps its traceback. :func:`warn` prints `meap: warning: <message>` and carries on.
"""

import os
import sys


class UserError(Exception):
    """Bad input from the user (a path, a file's contents, a config key or value)."""

    on_every_process = False  # True where every process of a job raises it alike (say it once)


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun / accelerate launch (which set RANK)."""
    return os.environ.get("RANK", "0") == "0"


def error_line(error: UserError) -> str | None:
    """The line to print for ``error`` on this process: once per job for an error every process raises
    alike, otherwise from whichever process raised it (its rank named, so one failing rank is found)."""
    rank = os.environ.get("RANK", "0")
    if rank == "0":
        return f"meap: error: {error}"
    return None if error.on_every_process else f"meap: error: rank {rank}: {error}"


def warn(message: str) -> None:
    """Tell the user about a questionable but workable setting, on one line of stderr (once per job)."""
    if is_main_process():
        print(f"meap: warning: {message}", file=sys.stderr)
