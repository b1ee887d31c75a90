"""Errors that reach the user as one clear line (see ``rawdrift/cli.py``)."""


class RawdriftError(ValueError):
    """Bad input or parameter; the message names the offending file or param."""
