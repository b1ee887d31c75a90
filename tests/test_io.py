"""Atomic writers (rawdrift.io): a killed writer's temporaries are swept by the next writer."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rawdrift.io import LEGACY_TEMP_AGE_S, atomic_dir, atomic_file, sweep_stale_temps

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from rawdrift.io import atomic_dir, atomic_file
target = Path(sys.argv[1])
with atomic_dir(target / "model") as tmp:
    (tmp / "fold0.safetensors").write_bytes(b"x" * 4096)
    with atomic_file(target / "model.json") as f:
        f.write_text("{}")
        os.kill(os.getpid(), signal.SIGKILL)      # kill -9 mid-write
"""


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_next_writer_removes_what_a_killed_writer_left(tmp_path):
    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True)
    assert r.returncode == -signal.SIGKILL
    left = hidden(tmp_path)
    assert len(left) == 2 and left[0].startswith(".model.json.tmp-") and left[1].startswith(".model.tmp-")
    assert (tmp_path / left[1] / "fold0.safetensors").stat().st_size == 4096
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "fold0.safetensors").write_bytes(b"y")
    assert hidden(tmp_path) == [left[0]]           # the dir writer sweeps its own target's leftovers only
    with atomic_file(tmp_path / "model.json") as f:
        f.write_text("[]")
    assert hidden(tmp_path) == []
    assert (tmp_path / "model" / "fold0.safetensors").read_bytes() == b"y"
    assert (tmp_path / "model.json").read_text() == "[]"


def test_a_live_writers_temporaries_are_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".model.tmp-{sleeper.pid}-abcd"
        mine = tmp_path / f".model.tmp-{os.getpid()}-efgh"
        live.mkdir()
        mine.mkdir()
        assert sweep_stale_temps(tmp_path / "model") == []
        assert live.is_dir() and mine.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sweep_stale_temps(tmp_path / "model") == [live]     # its writer is gone now
    assert mine.is_dir()


def test_temporaries_without_a_pid_go_when_older_than_the_threshold(tmp_path):
    old, new = tmp_path / ".bi_s_me.tmp-k3j4h5x1", tmp_path / ".bi_s_me.tmp-q8w7e6r5"
    other = tmp_path / ".bi_s_ga.tmp-z1x2c3v4"            # another target's: not this writer's to judge
    for d in (old, new, other):
        d.mkdir()
    stamp = time.time() - LEGACY_TEMP_AGE_S - 60
    os.utime(old, (stamp, stamp))
    os.utime(other, (stamp, stamp))
    assert sweep_stale_temps(tmp_path / "bi_s_me") == [old]
    assert hidden(tmp_path) == [other.name, new.name]
