"""User-facing errors: the CLI prints their message as one line and exits with status 2."""


class ElthError(Exception):
    """Bad input, missing data or an unusable file: a clear message, never a traceback."""
