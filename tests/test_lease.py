"""Run leases: one holder at a time, heartbeats keep a lease, a stale one is taken over."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace

from elth.experiments.lease import Lease, LeaseInfo, LeaseLost, current, holder
from elth.files import process_space_tag


def test_a_held_lease_is_refused_and_a_released_one_is_taken(tmp_path):
    first = Lease.acquire(tmp_path, label="run a", timeout=60)
    assert first is not None and first.number == 0
    assert Lease.acquire(tmp_path, timeout=60) is None
    info = holder(tmp_path, timeout=60)
    assert info is not None and info.owner == first.info.owner and info.label == "run a"
    first.release()
    assert holder(tmp_path, timeout=60) is None
    second = Lease.acquire(tmp_path, timeout=60)
    assert second is not None and second.number == 1 and second.taken_over is None
    assert [p.name for p in tmp_path.glob("lease.*.json")] == ["lease.000001.json"]


def test_a_heartbeat_keeps_the_lease_past_the_timeout(tmp_path):
    lease = Lease.acquire(tmp_path, timeout=0.6, heartbeat=0.1)
    with lease:
        time.sleep(1.2)
        assert Lease.acquire(tmp_path, timeout=0.6) is None
    assert current(tmp_path)[1].released


def test_a_stale_lease_is_taken_over_and_its_holder_learns_it(tmp_path):
    dead = Lease.acquire(tmp_path, timeout=0.3)  # never beats: a killed worker
    time.sleep(0.4)
    assert holder(tmp_path, timeout=0.3) is None
    successor = Lease.acquire(tmp_path, timeout=0.3)
    assert successor is not None and successor.number == dead.number + 1
    assert successor.taken_over.owner == dead.info.owner
    try:
        dead.beat()
        raise AssertionError("a superseded lease must not beat")
    except LeaseLost:
        pass
    dead.release()  # must not touch the successor's lease
    assert holder(tmp_path, timeout=0.3).owner == successor.info.owner


def test_a_lost_lease_calls_back_from_the_heartbeat(tmp_path):
    lost = threading.Event()
    lease = Lease.acquire(tmp_path, timeout=0.3, heartbeat=0.05)
    lease.on_lost = lost.set
    # Someone presumed it dead: a newer lease appears.
    other = LeaseInfo(owner="other", host="elsewhere", pid=1, started=time.time(), heartbeat=time.time())
    (tmp_path / "lease.000005.json").write_text(json.dumps(asdict(other)))
    with lease:
        assert lost.wait(2.0)
    assert lease.lost


def test_a_lease_of_a_killed_process_of_this_host_is_taken_over_at_once(tmp_path):
    """A killed command run again resumes its runs without waiting for their leases to time out; a
    lease of another host (whose processes cannot be seen) still counts until its heartbeat stops."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    now = time.time()
    dead = LeaseInfo(owner="dead", host=socket.gethostname(), pid=int(gone.stdout), started=now, heartbeat=now)
    (tmp_path / "lease.000000.json").write_text(json.dumps(asdict(dead)))
    assert holder(tmp_path, timeout=60) is None
    successor = Lease.acquire(tmp_path, timeout=60)
    assert successor is not None and successor.number == 1 and successor.taken_over.owner == "dead"
    successor.release()
    elsewhere = LeaseInfo(owner="far", host="another-host", pid=int(gone.stdout), started=now, heartbeat=now)
    (tmp_path / "lease.000002.json").write_text(json.dumps(asdict(elsewhere)))
    assert holder(tmp_path, timeout=60).owner == "far"
    assert Lease.acquire(tmp_path, timeout=60) is None
    alive = LeaseInfo(owner="me", host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now)
    (tmp_path / "lease.000003.json").write_text(json.dumps(asdict(alive)))
    assert holder(tmp_path, timeout=60).owner == "me"


def test_a_lease_of_another_pid_namespace_on_a_host_of_the_same_name_counts_until_its_heartbeat_stops(tmp_path):
    """Containers may share a host name but not their process ids: a holder in another pid namespace
    cannot be looked up from here, so its lease holds while it beats (not taken over at once)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    now = time.time()
    other_space = "f" * 8 if process_space_tag() != "f" * 8 else "e" * 8
    boxed = LeaseInfo(owner="boxed", host=socket.gethostname(), pid=int(gone.stdout), started=now, heartbeat=now,
                      space=other_space)
    assert boxed.live(timeout=60) and not boxed.live(timeout=60, now=now + 61)
    here = replace(boxed, owner="here", space=process_space_tag())
    assert not here.live(timeout=60)  # this space, its process gone: free at once
    (tmp_path / "lease.000000.json").write_text(json.dumps(asdict(boxed)))
    assert holder(tmp_path, timeout=60).owner == "boxed" and Lease.acquire(tmp_path, timeout=60) is None
    # a field a later version adds does not make the lease unreadable
    (tmp_path / "lease.000000.json").write_text(json.dumps({**asdict(boxed), "gpu": "H200"}))
    assert holder(tmp_path, timeout=60).owner == "boxed"
    # a lease of this process records this space
    (tmp_path / "lease.000000.json").unlink()
    mine = Lease.acquire(tmp_path, timeout=60)
    assert mine is not None and holder(tmp_path, timeout=60).space == process_space_tag()
    mine.release()


def _race(directory, barrier, results):
    barrier.wait()
    lease = Lease.acquire(directory, timeout=60)
    results.put(lease is not None)
    barrier.wait()  # the winner lives on until every racer has tried (a dead holder's lease is free)


def test_of_many_processes_racing_for_a_lease_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    wins = [results.get(timeout=5) for _ in range(n)]
    assert sum(wins) == 1
