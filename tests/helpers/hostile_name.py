"""Run sockload.py under a hostile process name (tests only).

    python3 hostile_name.py [JUNK...] -- MODE [sockload options]

Sets this process's comm with prctl(PR_SET_NAME) to bytes that are not UTF-8 and hold rich
markup and a terminal escape sequence (b"\\xff[/]\\x1b[2J"), as any user may do for their own
processes, then runs sockload.py in this same process: the sockets it holds belong to a
process with that name. JUNK arguments (hostile bytes too) are ignored: they put hostile text
into the process's command line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import runpy
import sys
from pathlib import Path

PR_SET_NAME = 15  # linux/prctl.h
NAME = b"\xff[/]\x1b[2J"


def main() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(NAME), 0, 0, 0) != 0:
        raise SystemExit(f"prctl failed: errno {ctypes.get_errno()}")
    sockload = Path(__file__).with_name("sockload.py")
    args = sys.argv[1:]
    sys.argv = [str(sockload), *args[args.index("--") + 1:]]
    runpy.run_path(str(sockload), run_name="__main__")


if __name__ == "__main__":
    main()
