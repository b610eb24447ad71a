"""Counter history between runs (--state-dir): an SQLite store in netdiag's own state dir.

Each run records its counter sample; the next run in the same namespace judges counters by
their change since then. A reboot (boot id changed) or a recreated namespace (its inode
changed) is a reset, said as such; so is any counter that went down. Concurrent cron runs
are safe: WAL journal, a busy timeout, one short write transaction per run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from netdiag.errors import UsageError
from netdiag.facts import CounterFacts, Facts, SoftnetCpu, SoftnetFacts

KEEP_SECONDS = 30 * 86400
KEEP_RUNS = 5000  # per namespace
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    netns TEXT NOT NULL,
    netns_inode INTEGER,
    boot_id TEXT,
    taken_at REAL NOT NULL,
    status TEXT,
    counters TEXT NOT NULL,
    softnet TEXT,
    sockets TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_netns ON runs (netns, taken_at);
"""


def default_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/netdiag")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".local", "state")
    return Path(base) / "netdiag"


def resolve(state_dir: str) -> Path:
    return default_dir() if state_dir == "auto" else Path(state_dir)


@dataclass
class Run:
    id: int
    netns: str
    netns_inode: int | None
    boot_id: str | None
    taken_at: float
    status: str | None
    counters: dict
    softnet: list | None
    sockets: dict | None


class Store:
    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(directory / "history.sqlite"), timeout=30,
                                      isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"state directory {directory}: {exc}") from None
        self.path = directory / "history.sqlite"

    def close(self) -> None:
        self.db.close()

    def _row(self, r) -> Run:
        return Run(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]),
                   json.loads(r[7]) if r[7] else None, json.loads(r[8]) if r[8] else None)

    def previous(self, netns: str) -> Run | None:
        r = self.db.execute("SELECT id, netns, netns_inode, boot_id, taken_at, status, counters,"
                            " softnet, sockets FROM runs WHERE netns = ? ORDER BY taken_at DESC,"
                            " id DESC LIMIT 1", (netns,)).fetchone()
        return self._row(r) if r else None

    def runs(self, netns: str, last: int) -> list[Run]:
        rows = self.db.execute("SELECT id, netns, netns_inode, boot_id, taken_at, status, "
                               "counters, softnet, sockets FROM runs WHERE netns = ? ORDER BY "
                               "taken_at DESC, id DESC LIMIT ?", (netns, last)).fetchall()
        return [self._row(r) for r in reversed(rows)]

    def namespaces(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT netns FROM runs ORDER BY 1")]

    def record(self, facts: Facts, status: str, identity: tuple[int | None, str | None]) -> None:
        if facts.counters is None:
            return
        softnet = [[c.cpu, c.processed, c.dropped, c.time_squeeze]
                   for c in facts.softnet.cpus] if facts.softnet else None
        sockets = facts.census.by_state if facts.census else None
        now = facts.counters.taken_at or time.time()
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO runs (netns, netns_inode, boot_id, taken_at, status, counters, "
                "softnet, sockets) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (facts.netns, identity[0], identity[1], now, status,
                 json.dumps(facts.counters.counters), json.dumps(softnet) if softnet else None,
                 json.dumps(sockets) if sockets is not None else None))
            self.db.execute("DELETE FROM runs WHERE taken_at < ?", (now - KEEP_SECONDS,))
            self.db.execute(
                "DELETE FROM runs WHERE netns = ? AND id NOT IN (SELECT id FROM runs WHERE "
                "netns = ? ORDER BY taken_at DESC, id DESC LIMIT ?)",
                (facts.netns, facts.netns, KEEP_RUNS))
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise UsageError(f"cannot write history {self.path}: {exc}") from None


def identity() -> tuple[int | None, str | None]:
    """(inode of the current network namespace, boot id): what makes counters continuous."""
    try:
        inode = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        inode = None
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = None
    return inode, boot


def attach_previous(facts: Facts, prev: Run, ident: tuple[int | None, str | None]) -> None:
    """Make the previous run the baseline the rules judge counters against."""
    now = facts.counters.taken_at if facts.counters else time.time()
    facts.counters_before = CounterFacts(counters=prev.counters, taken_at=prev.taken_at)
    if prev.softnet:
        facts.softnet_before = SoftnetFacts(cpus=[SoftnetCpu(c, p, d, s)
                                                  for c, p, d, s in prev.softnet])
    facts.interval = max(now - prev.taken_at, 0.001)
    facts.baseline = "previous run"
    if prev.boot_id and ident[1] and prev.boot_id != ident[1]:
        facts.baseline_reset = "the host rebooted since the previous run"
    elif prev.netns_inode and ident[0] and prev.netns_inode != ident[0]:
        facts.baseline_reset = "the network namespace was recreated since the previous run"
