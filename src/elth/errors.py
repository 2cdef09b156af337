"""User-facing errors: the CLI prints their message as one line and exits with status 2."""


class ElthError(Exception):
    """Bad input, missing data or an unusable file: a clear message, never a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a batch system or a container stopping elth), raised like Ctrl-C's KeyboardInterrupt
    so that a command stops the same clean way: leases released, attempts recorded, finished work kept."""


def raise_terminated(signum, frame):
    """A SIGTERM handler: `Terminated` where the signal arrives."""
    raise Terminated()
