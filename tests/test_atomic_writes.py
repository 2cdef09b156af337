"""Atomic writes: temporary files of killed writers are removed by the next write there; JSON is strict."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from elth.files import STALE_SECONDS, atomic_path, remove_stale_temporaries, write_json_atomic, write_text_atomic

KILLED_WRITER = """
import os, sys
from elth.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half a file")
    os.kill(os.getpid(), 9)
"""


def temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_in_the_directory_removes(tmp_path):
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "checkpoint.pt")], timeout=120)
    assert p.returncode == -9
    (left,) = temporaries(tmp_path)
    assert left.startswith(".checkpoint.pt.") and not (tmp_path / "checkpoint.pt").exists()
    write_text_atomic(tmp_path / "result.json", "{}\n")  # another file, same directory
    assert temporaries(tmp_path) == []
    assert (tmp_path / "result.json").read_text() == "{}\n"


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    with atomic_path(tmp_path / "a.json") as mine:
        mine.write_text("being written")
        write_text_atomic(tmp_path / "b.json", "{}")  # a second writer in the same directory
        assert mine.exists()
    assert (tmp_path / "a.json").read_text() == "being written" and temporaries(tmp_path) == []


def test_an_old_temporary_of_another_host_is_removed(tmp_path):
    other = tmp_path / ".ticket.safetensors.0123abcd-4242.k3x9q.tmp"
    recent = tmp_path / ".ticket.safetensors.0123abcd-4243.z8y7w.tmp"
    other.write_text("x")
    recent.write_text("y")
    old = time.time() - STALE_SECONDS - 60
    os.utime(other, (old, old))
    assert remove_stale_temporaries(tmp_path) == [other]
    assert temporaries(tmp_path) == [recent.name]  # it may still be written on the other host


def test_json_files_are_strict_json(tmp_path):
    write_json_atomic(tmp_path / "r.json", {"loss": float("nan"), "curve": [1.0, float("inf"), -float("inf")]})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "curve": [1.0, None, None]}


def test_atomically_written_files_get_the_mode_of_the_umask(tmp_path):
    """Not the 0600 of a temporary file: a store shared by a group stays readable by it."""
    code = "import sys\nfrom elth.files import write_json_atomic\nwrite_json_atomic(sys.argv[1], {'a': 1})\n"
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        path = tmp_path / f"u{umask:o}.json"
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, preexec_fn=lambda u=umask: os.umask(u))
        assert path.stat().st_mode & 0o777 == mode
