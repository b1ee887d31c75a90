"""Errors that reach the user as one clear line (see ``stages/_cli.py``)."""


class RawdriftError(ValueError):
    """Bad input or parameter; the message names the offending file or param."""
