"""Errors that reach the user as one clear line (see ``rawdrift/cli.py``)."""

from __future__ import annotations


class RawdriftError(ValueError):
    """Bad input or parameter; the message names the offending file or param."""


class ParamError(RawdriftError):
    """A value that is out of range, named by ``key`` as the code that checked it knows it.

    Library code names the argument (``ParamError("epochs", "must be an int >= 1, got 0")``
    reads ``epochs: must be an int >= 1, got 0``); whoever knows where the value came from adds
    that with :meth:`under` (``train.microscopy``) and a source (``params.yaml: ...``, see
    :func:`rawdrift.params.sourced`), or words it for its own flag (``--device: ...``).
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}" if key else problem)

    def under(self, prefix: str) -> "ParamError":
        """The same problem with ``key`` read inside ``prefix`` (``epochs`` -> ``train.drone.epochs``)."""
        if not prefix:
            return self
        return ParamError(f"{prefix}.{self.key}" if self.key else prefix, self.problem)
