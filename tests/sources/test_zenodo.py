"""The Zenodo source (rawdrift.sources.zenodo) through a local HTTP server that speaks the REST
API's shape (no network): download, verify, resume, extract safely, and the fetch stage on it."""

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from helpers import RATIOS, record_tree, stage
from rawdrift.errors import RawdriftError
from rawdrift.sources import folder, zenodo


def _zip(tree: Path | None = None, extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if tree is not None:
            for p in sorted(tree.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(tree).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


class Record:
    """Serves GET /api/records/<id> and /files/<key> (Range supported); ``truncate`` cuts the
    first ``n`` responses of a file short, ``corrupt`` serves other bytes than listed."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.listed = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
        self.truncate: dict[str, int] = {}
        self.ranges: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/api/records/"):
                    port = self.server.server_address[1]
                    body = json.dumps({"id": 1, "files": [
                        {"key": k, "size": len(v), "checksum": f"md5:{rec.listed[k]}",
                         "links": {"self": f"http://127.0.0.1:{port}/files/{k}"}} for k, v in rec.files.items()]})
                    self._send(200, body.encode(), "application/json")
                    return
                key = self.path.rsplit("/", 1)[-1]
                data = rec.files[key]
                start = 0
                if "Range" in self.headers:
                    rec.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                chunk = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if rec.truncate.get(key, 0) > 0:
                    rec.truncate[key] -= 1
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"http://127.0.0.1:{self.server.server_address[1]}/api/records"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def record(tmp_path):
    record_tree(tmp_path / "tree")
    rec = Record({"Raw-Microscopy.zip": _zip(tmp_path / "tree/microscopy"),
                  "Raw-Drone.zip": _zip(tmp_path / "tree/drone")})
    yield rec
    rec.close()


def test_zenodo_record_downloads_verifies_extracts_and_resumes(tmp_path, record):
    record.truncate["Raw-Microscopy.zip"] = 1          # the first response breaks off half-way
    root = zenodo.fetch_record("microscopy", tmp_path / "dl", record.api, 1, backoff=0.01)
    assert record.ranges and record.ranges[0].startswith("bytes=") and record.ranges[0] != "bytes=0-"
    assert (tmp_path / "dl/1/Raw-Microscopy.zip").exists() and not (tmp_path / "dl/1/Raw-Drone.zip").exists()
    meta = folder.build("microscopy", root, tmp_path / "out", tile=32, count=0, folds=3, seed=0, intensities=RATIOS)
    assert meta["count"] == 11
    # a second fetch finds the verified file and downloads nothing (any download would now break off)
    record.truncate["Raw-Microscopy.zip"] = 99
    assert zenodo.fetch_record("microscopy", tmp_path / "dl", record.api, 1, retries=0) == root


def test_zenodo_checksum_mismatch_fails_and_keeps_nothing(tmp_path, record):
    record.listed["Raw-Drone.zip"] = "0" * 32
    with pytest.raises(RawdriftError, match=r"Raw-Drone.zip failed after 2 attempt\(s\) \(checksum mismatch: md5 "):
        zenodo.fetch_record("drone", tmp_path / "dl", record.api, 1, retries=1, backoff=0.01)
    assert not list((tmp_path / "dl/1").glob("Raw-Drone.zip*"))


def test_zenodo_truncated_every_time_fails_with_the_byte_count(tmp_path, record):
    record.truncate["Raw-Drone.zip"] = 99
    with pytest.raises(RawdriftError, match=r"Raw-Drone.zip failed after 3 attempt\(s\) \(truncated: \d+ of \d+ bytes\)"):
        zenodo.fetch_record("drone", tmp_path / "dl", record.api, 1, retries=2, backoff=0.01)


@pytest.mark.parametrize("member, msg", [
    ("../evil.txt", "'..' in the path refused"),
    ("/etc/evil.txt", "absolute path refused"),
])
def test_zip_slip_archives_are_refused(tmp_path, member, msg):
    rec = Record({"Raw-Drone.zip": _zip(extra={"drone/ok.txt": "x", member: "pwned"})})
    try:
        with pytest.raises(RawdriftError, match=msg):
            zenodo.fetch_record("drone", tmp_path / "dl", rec.api, 1, backoff=0.01)
    finally:
        rec.close()
    assert not (tmp_path / "dl/evil.txt").exists() and not (tmp_path / "dl/1/extracted/Raw-Drone").exists()


def test_links_and_zip_bombs_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("drone/link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    (tmp_path / "a.zip").write_bytes(buf.getvalue())
    with pytest.raises(RawdriftError, match="is a link; refused"):
        zenodo.extract_zip(tmp_path / "a.zip", tmp_path / "x", 1 << 20)
    (tmp_path / "b.zip").write_bytes(_zip(extra={"big.bin": b"\0" * 200_000}))
    with pytest.raises(RawdriftError, match="would expand to 200000 bytes, more than the limit 100000"):
        zenodo.extract_zip(tmp_path / "b.zip", tmp_path / "y", 100_000)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_fetch_stage_with_the_zenodo_source(tmp_path, record):
    params = {"seed": 0, "data": {"source": "zenodo", "folds": 2, "intensities": RATIOS,
                                  "drone": {"count": 0, "tile": 16},
                                  "zenodo": {"record": 1, "api": record.api, "downloads": "downloads",
                                             "max_extract_gb": 1, "retries": 0}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = stage(tmp_path, "fetch.py", "drone")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("fetch@drone: 2 tiles 16x16 at 2 intensities, 2 folds")
    meta = json.loads((tmp_path / "data/raw/drone/meta.json").read_text())
    assert meta["source"] == "zenodo" and meta["provenance"]["doi"] == "10.5281/zenodo.1"
    record.listed["Raw-Drone.zip"] = "f" * 32                   # now the record disagrees with the bytes
    (tmp_path / "downloads/1/Raw-Drone.zip").unlink()
    r = stage(tmp_path, "fetch.py", "drone")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "Raw-Drone.zip failed after 1 attempt(s) (checksum mismatch" in r.stderr
    assert not (tmp_path / "data/raw/drone.tmp").exists() and meta == json.loads(
        (tmp_path / "data/raw/drone/meta.json").read_text())          # the earlier output is untouched
