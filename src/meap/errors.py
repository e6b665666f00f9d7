"""User-facing errors: one line that names the file or key and says what is expected.

The CLI prints `meap: error: <message>` and exits with status 2 for these; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user (a path, a file's contents, a config key or value)."""
