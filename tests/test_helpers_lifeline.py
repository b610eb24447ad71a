"""The test helpers leave with the test that started them (tests/helpers/lifeline.py): a
test process killed mid-run (a CI timeout, a stray signal) must not leave helpers and their
forked workers holding sockets for their --hold time."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from conftest import SOCKLOAD

# Stands for a test: starts a helper with forked workers in the namespace, says the helper's
# pid once it is READY, then waits to be killed.
STAND_IN = """
import subprocess, sys, time
p = subprocess.Popen(["ip", "netns", "exec", sys.argv[1], sys.executable, sys.argv[2], "herd",
                      "--workers", "2", "--count", "3", "--port", "9731", "--hold", "120"],
                     stdout=subprocess.PIPE, text=True)
print(p.pid, p.stdout.readline().strip(), flush=True)
time.sleep(300)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_test_takes_its_helper_and_the_helpers_workers(netns):
    stand_in = subprocess.Popen([sys.executable, "-c", STAND_IN, netns.name, str(SOCKLOAD)],
                                stdout=subprocess.PIPE, text=True)
    netns.procs.append(stand_in)
    pid, ready = stand_in.stdout.readline().split(" ", 1)
    assert ready.startswith("READY"), ready
    helper = psutil.Process(int(pid))
    tree = [helper.pid] + [c.pid for c in helper.children(recursive=True)]
    assert len(tree) == 3, tree  # the helper and its two forked workers
    stand_in.kill()
    stand_in.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(gone(p) for p in tree):
        time.sleep(0.05)
    assert [p for p in tree if not gone(p)] == [], "helpers outlived the test that started them"
