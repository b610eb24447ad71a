"""Record a snapshot of the current network namespace for netdiag's fixture tests.

    ip netns exec NS python3 tests/tools/record_snapshot.py DEST "how the condition was made"

Copies the /proc files netdiag reads and captures the raw sock_diag replies (sockdiag.bin),
so parser tests run on real bytes from a real kernel. Read-only on the host.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from netdiag.collect.census import CensusBuilder  # noqa: E402
from netdiag.collect.sockets import netlink_census  # noqa: E402
from netdiag.collect.tcpinfo import EXT_MASK  # noqa: E402
from netdiag.sysctls import SYSCTL_KEYS  # noqa: E402

FILES = ["proc/net/netstat", "proc/net/snmp", "proc/net/snmp6", "proc/net/sockstat",
         "proc/net/sockstat6", "proc/net/softnet_stat", "proc/softirqs", "proc/net/dev",
         "proc/net/tcp", "proc/net/tcp6", "proc/sys/fs/file-nr", "proc/sys/kernel/osrelease",
         "proc/sys/kernel/hostname"]


def main() -> None:
    dest = Path(sys.argv[1])
    note = sys.argv[2] if len(sys.argv) > 2 else ""
    rels = FILES + ["proc/sys/" + k.replace(".", "/") for k in SYSCTL_KEYS]
    for rel in rels:
        src = Path("/") / rel
        if not src.exists():
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    builder = CensusBuilder("netlink", None)
    with open(dest / "sockdiag.bin", "wb") as fh:
        # With tcp_info and skmeminfo attributes, as `netdiag check` asks for them.
        netlink_census(builder, capture=fh, ext=EXT_MASK)
    census = builder.finish()
    meta = {"kernel": Path("/proc/sys/kernel/osrelease").read_text().strip(),
            "how": note, "recorded": "live capture with tests/tools/record_snapshot.py",
            "sockets_by_state": census.by_state}
    (dest / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
