"""Atomic file and directory output, checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def read_json(path: str | Path, missing_hint: str = ""):
    """Parse a JSON file; a missing or malformed file is a RawdriftError naming it."""
    from rawdrift.errors import RawdriftError
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RawdriftError(f"{path}: file not found{missing_hint}") from None
    except json.JSONDecodeError as e:
        raise RawdriftError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: Temporaries of a writer whose name carries no PID (written before PIDs were) count as
#: stale after this many seconds.
LEGACY_TEMP_AGE_S: float = 3600.0


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0 probes without signalling)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # someone else's live process
        return True
    return True


def _temp_prefix(target: Path) -> str:
    """``.X.tmp-<pid>-``: what a writer of ``target`` names its temporaries."""
    return f".{target.name}.tmp-{os.getpid()}-"


def sweep_stale_temps(target: str | Path) -> list[Path]:
    """Remove what killed writers of ``target`` left beside it; return the removed paths.

    Temporaries are ``.X.tmp-<pid>-*`` (and ``.X.old-<pid>`` from a kill between the two renames of
    :func:`atomic_dir`). One is stale when its ``<pid>`` is no live process on this machine (the
    sweep trusts PIDs: writers of one workspace run on one host). A temporary named without a PID
    (``.X.tmp-<random>``, the old naming) is stale when older than :data:`LEGACY_TEMP_AGE_S`.
    A live writer's temporaries are left alone, so concurrent writers do not break each other.
    """
    import re
    import time
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:tmp-(?:(\d+)-)?|old-(\d+)$)")
    removed = []
    for entry in target.parent.iterdir():
        m = pattern.match(entry.name)
        if m is None:
            continue
        pid = m.group(1) or m.group(2)
        if pid is not None:
            stale = not _pid_alive(int(pid))
        else:
            try:
                stale = time.time() - entry.lstat().st_mtime > LEGACY_TEMP_AGE_S
            except FileNotFoundError:
                continue
        if not stale:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target``, on error it is removed.

    Readers never see a half-written ``target``: it is either the old one or the complete new one.
    What killed writers left (``kill -9`` mid-write) is removed first (:func:`sweep_stale_temps`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (mode 0644),
    on error it is removed, so ``path`` is never half-written. Stale temporaries of killed
    writers are removed first (:func:`sweep_stale_temps`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def save_figure(fig, path: str | Path, **kwargs) -> None:
    """Save a matplotlib figure atomically."""
    with atomic_file(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, **kwargs)
