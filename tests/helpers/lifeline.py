"""Test helpers leave with the test that started them.

A helper that holds sockets or workers for --hold seconds would outlive a test process that
was killed (a CI timeout, a Ctrl-C that did not reach it) by that long. die_with_parent()
asks the kernel to SIGKILL the caller when its parent exits (PR_SET_PDEATHSIG); forked
workers call it again (fork clears it), so a whole helper tree goes with the test.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


def die_with_parent() -> None:
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
    if os.getppid() != parent:  # the parent left before the request was in place
        os._exit(0)


def alive(pid: int) -> bool:
    """Whether process `pid` still exists (for a worker meant to outlive its own parent
    but not the test)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
