"""The published record (``data.source: zenodo``): download, verify, extract safely, then read
it as a folder (:mod:`rawdrift.sources.folder`, record layout).

Zenodo's REST API (``GET <api>/<record>``) lists the record's files with their size and md5
checksum. Each file the dataset needs (those whose name contains the dataset's name, or
all of them when none does) is downloaded to ``<downloads>/<record>/<file>``: resumed with an
HTTP Range request after a broken connection, retried with back-off, and accepted only when
size and md5 match. Zip archives are extracted next to it, member by member, refusing
absolute paths, ``..`` components, links and archives that would expand past a size limit.
Nothing is downloaded unless this source is selected; a complete, verified file is not
fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rawdrift.errors import RawdriftError
from rawdrift.io import atomic_dir

API = "https://zenodo.org/api/records"
RECORD = 5235536
CHUNK = 1 << 20


@dataclass(frozen=True)
class RecordFile:
    """One file of a record: name, size in bytes, md5 hex digest, download URL."""

    key: str
    size: int
    md5: str
    url: str


def _get(url: str, timeout: float, headers: dict | None = None):
    req = urllib.request.Request(url, headers={"User-Agent": "rawdrift", **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)


def record_files(api: str, record: int | str, timeout: float = 60.0) -> list[RecordFile]:
    """The file list of a record from the REST API (current and legacy field names)."""
    url = f"{api.rstrip('/')}/{record}"
    try:
        with _get(url, timeout, {"Accept": "application/json"}) as resp:
            body = json.loads(resp.read().decode())
    except urllib.error.HTTPError as e:
        raise RawdriftError(f"{url}: HTTP {e.code} ({e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        raise RawdriftError(f"{url}: cannot reach the record ({getattr(e, 'reason', e)})") from None
    except json.JSONDecodeError:
        raise RawdriftError(f"{url}: the answer is not JSON") from None
    files = body.get("files")
    if isinstance(files, dict):                       # newer API: {"entries": {...}}
        files = list(files.get("entries", {}).values())
    if not isinstance(files, list) or not files:
        raise RawdriftError(f"{url}: the record lists no files")
    out = []
    for f in files:
        key = f.get("key") or f.get("filename")
        size = f.get("size", f.get("filesize"))
        checksum = str(f.get("checksum", ""))
        links = f.get("links", {})
        link = links.get("content") or links.get("self") or links.get("download")
        if not key or size is None or not checksum or not link:
            raise RawdriftError(f"{url}: file entry without key, size, checksum or link: {f}")
        algo, _, digest = checksum.rpartition(":")
        if algo not in ("", "md5"):
            raise RawdriftError(f"{url}: {key}: unsupported checksum {algo}")
        out.append(RecordFile(key=key, size=int(size), md5=digest.lower(), url=link))
    return out


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(f: RecordFile, dest: Path, retries: int = 4, backoff: float = 1.0, timeout: float = 60.0) -> Path:
    """Download one record file to ``dest/<key>``, resuming and retrying; verified by size and md5.

    The bytes go to ``<key>.part`` first; a Range request continues it after a broken
    connection. A file already complete and verified is kept as is.
    """
    _check_member_name(f.key, "record file")
    target = dest / f.key
    if target.exists() and target.stat().st_size == f.size and md5(target) == f.md5:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        have = part.stat().st_size if part.exists() else 0
        if have > f.size:
            part.unlink()
            have = 0
        if have < f.size:
            try:
                _fetch_range(f, part, have, timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                if isinstance(e, urllib.error.HTTPError) and e.code in (403, 404, 410):
                    break
                continue
        size = part.stat().st_size if part.exists() else 0
        if size < f.size:
            last = f"truncated: {size} of {f.size} bytes"
            continue
        digest = md5(part)
        if size == f.size and digest == f.md5:
            part.replace(target)
            return target
        last = f"checksum mismatch: md5 {digest}, the record says {f.md5}"
        part.unlink()                                  # corrupt: start over
    if part.exists() and last.startswith("checksum"):
        part.unlink()
    raise RawdriftError(f"{f.url}: download of {f.key} failed after {retries + 1} attempt(s) ({last})")


def _fetch_range(f: RecordFile, part: Path, have: int, timeout: float) -> None:
    headers = {"Range": f"bytes={have}-"} if have else {}
    with _get(f.url, timeout, headers) as resp:
        mode = "ab" if have and resp.status == 206 else "wb"   # a server ignoring Range sends it all
        with open(part, mode) as out:
            shutil.copyfileobj(resp, out, CHUNK)


def _check_member_name(name: str, what: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise RawdriftError(f"{what} {name!r}: absolute path refused")
    if ".." in p.parts:
        raise RawdriftError(f"{what} {name!r}: '..' in the path refused (it would write outside the folder)")
    return p


def extract_zip(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Extract ``archive`` into ``dest`` (replaced atomically), refusing unsafe members.

    Refused: absolute paths, ``..`` components, symbolic links, and archives whose members
    would add up to more than ``max_bytes`` (declared sizes, and counted while writing).
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise RawdriftError(f"{archive}: not a readable zip archive ({e})") from None
    with zf:
        members = zf.infolist()
        for m in members:
            _check_member_name(m.filename, f"{archive}: member")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise RawdriftError(f"{archive}: member {m.filename!r} is a link; refused")
        declared = sum(m.file_size for m in members)
        if declared > max_bytes:
            raise RawdriftError(f"{archive}: would expand to {declared} bytes, more than the limit {max_bytes} "
                                f"(data.zenodo.max_extract_gb)")
        written = 0
        with atomic_dir(dest) as tmp:
            for m in members:
                target = tmp / _check_member_name(m.filename, f"{archive}: member")
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(m) as src, open(target, "wb") as out:
                        for block in iter(lambda: src.read(CHUNK), b""):
                            written += len(block)
                            if written > max_bytes:
                                raise RawdriftError(f"{archive}: expands past the limit {max_bytes} bytes "
                                                    f"(data.zenodo.max_extract_gb)")
                            out.write(block)
                except (zipfile.BadZipFile, zlib.error) as e:
                    raise RawdriftError(f"{archive}: member {m.filename!r} is corrupt ({e})") from None
    return dest


def fetch_record(dataset: str, downloads: str | Path, api: str = API, record: int | str = RECORD,
                 max_bytes: int = 200 << 30, retries: int = 4, backoff: float = 1.0) -> Path:
    """Download and extract the files ``dataset`` needs; return the folder to read.

    Files are chosen by name (containing the dataset's name, case-insensitive; all files when
    none does). Archives are extracted to ``<downloads>/<record>/extracted/<archive stem>/``.
    """
    files = record_files(api, record)
    mine = [f for f in files if dataset.lower() in f.key.lower()] or files
    base = Path(downloads) / str(record)
    root = base / "extracted"
    for f in mine:
        path = download(f, base, retries=retries, backoff=backoff)
        if path.suffix.lower() == ".zip":
            out = root / path.stem
            stamp = out / ".rawdrift-extracted"
            if not (stamp.exists() and stamp.read_text() == f.md5):
                extract_zip(path, out, max_bytes)
                stamp.write_text(f.md5)
        else:
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, root / path.name)
    return root
