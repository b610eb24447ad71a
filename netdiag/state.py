"""Counter history between runs (--state-dir): an SQLite store in netdiag's own state dir.

Each run records its counter sample; the next run in the same namespace judges counters by
their change since then.

Which stored run is "the same namespace": a namespace is identified within a boot by its
netns cookie (SO_NETNS_COOKIE, 64 bits, never reused while the host runs; kernel 5.14+) or,
without it, by its nsfs inode. A run first looks for the newest run of this boot with the same
identity, whatever label that run had (so a renamed namespace, or a container whose label
changed, keeps its history); failing that, for the newest run under the same stable label
(default, a /run/netns name, a container or pod), which is then said to be a reset: the host
rebooted (boot id changed) or the namespace was recreated (identity changed). Labels of
namespaces known only by a holder process ("pid:N (cmd)") are not stable, so they only match
by identity. Runs are chained into a `series`, the key `netdiag history` shows.

The previous run is the last one stored (by insertion), not the one with the latest time: a
run stored with a later time (the clock was stepped back since) is a reset once, not for as
long as the clock needs to catch up.

A damaged store never costs the report: garbage pages or a truncated file are moved aside
(history.sqlite.damaged-TIME) and a new store starts; an unreadable row is skipped (and said);
a store that cannot be written (read-only, disk full) still gives its baseline and the report
says that this run was not stored. Concurrent cron runs are safe: WAL journal, a busy timeout,
one short write transaction per run, and a lock around moving a damaged store aside.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import socket
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdiag import safepath
from netdiag.errors import NetdiagError
from netdiag.facts import CounterFacts, Facts, SoftnetCpu, SoftnetFacts

KEEP_SECONDS = 30 * 86400
KEEP_RUNS = 5000  # per series
CANDIDATES = 20  # stored runs tried, newest first, before giving up on a baseline
SCHEMA_VERSION = 2
LAST_TIME = 253402300799  # 9999-12-31T23:59:59Z: a stored time past it cannot be shown
FILE = "history.sqlite"
# include/uapi/asm-generic/socket.h: SO_NETNS_COOKIE (kernel 5.14)
SO_NETNS_COOKIE = 71
# sqlite3.h primary result codes
SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT = 3, 8, 10, 11
SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 13, 14, 26
COLUMNS = ("id", "netns", "series", "netns_inode", "netns_cookie", "boot_id", "taken_at",
           "status", "counters", "softnet", "sockets")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    netns TEXT NOT NULL,
    series TEXT,
    netns_inode INTEGER,
    netns_cookie INTEGER,
    boot_id TEXT,
    taken_at REAL NOT NULL,
    status TEXT,
    counters TEXT NOT NULL,
    softnet TEXT,
    sockets TEXT
);
"""
INDEXES = """
CREATE INDEX IF NOT EXISTS runs_by_series ON runs (series, id);
CREATE INDEX IF NOT EXISTS runs_by_label ON runs (netns, id);
CREATE INDEX IF NOT EXISTS runs_by_boot ON runs (boot_id, id);
"""


class StoreError(NetdiagError):
    """The store cannot be used for what was asked; the message says what was lost."""


def default_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/netdiag")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".local", "state")
    return Path(base) / "netdiag"


def resolve(state_dir: str) -> Path:
    return default_dir() if state_dir == "auto" else Path(state_dir)


@dataclass(frozen=True)
class Identity:
    """What makes a namespace's counters continuous: the same boot, the same namespace."""

    inode: int | None
    cookie: int | None
    boot_id: str | None

    def same_namespace(self, inode: int | None, cookie: int | None) -> bool | None:
        """True/False when it can be told, None when neither side has a comparable id."""
        if self.cookie is not None and cookie is not None:
            return self.cookie == cookie
        if self.inode is not None and inode is not None:
            return self.inode == inode
        return None


def identity() -> Identity:
    """The identity of the network namespace this process is in now."""
    try:
        inode: int | None = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        inode = None
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot: str | None = fh.read().strip() or None
    except OSError:
        boot = None
    return Identity(inode, netns_cookie(), boot)


def netns_cookie() -> int | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    except OSError:
        return None
    return struct.unpack("=Q", raw)[0] if len(raw) == 8 else None


def stable_label(label: str) -> bool:
    """Labels that name the same thing across namespaces' lives (not a holder pid)."""
    return not label.startswith("pid:")


@dataclass
class Run:
    id: int
    netns: str
    series: str
    netns_inode: int | None
    netns_cookie: int | None
    boot_id: str | None
    taken_at: float
    status: str | None
    counters: dict
    softnet: list | None
    sockets: dict | None


class BadRow(ValueError):
    pass


def decode_row(r) -> Run:
    """A stored row, checked: anything another version or a damaged page left is BadRow."""
    rid, netns, series, inode, cookie, boot, taken_at, status, counters, softnet, sockets = r
    if not isinstance(netns, str):
        raise BadRow("label is not text")
    if isinstance(taken_at, bool) or not isinstance(taken_at, (int, float)) or \
            not math.isfinite(taken_at):
        raise BadRow("time is not a number")
    if not 0 <= taken_at <= LAST_TIME:
        raise BadRow("time is not between 1970 and 9999")
    for name, value in (("inode", inode), ("cookie", cookie)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRow(f"{name} is not a number")
    if boot is not None and not isinstance(boot, str):
        raise BadRow("boot id is not text")
    try:
        counters = json.loads(counters)
        softnet = json.loads(softnet) if softnet else None
        sockets = json.loads(sockets) if sockets else None
    except (TypeError, ValueError) as exc:
        raise BadRow(f"bad JSON ({exc})") from None
    if not isinstance(counters, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and all(
                isinstance(n, str) and _int(x) for n, x in v.items())
            for k, v in counters.items()):
        raise BadRow("counters are not {group: {name: integer}}")
    if softnet is not None and not (isinstance(softnet, list) and all(
            isinstance(c, list) and len(c) == 4 and all(_int(x) for x in c) for c in softnet)):
        raise BadRow("softnet is not a list of [cpu, processed, dropped, squeezed]")
    if sockets is not None and not (isinstance(sockets, dict) and all(
            isinstance(k, str) and _int(v) for k, v in sockets.items())):
        raise BadRow("sockets are not {state: count}")
    return Run(rid, netns, series if isinstance(series, str) and series else netns, inode,
               cookie, boot, float(taken_at), status if isinstance(status, str) else None,
               counters, softnet, sockets)


def _int(value: Any) -> bool:
    """A value as the kernel keeps them: an integer in [-2^63, 2^64) (Tcp MaxConn is -1; a
    stored 10^400 is no counter and would overflow every rate)."""
    return isinstance(value, int) and not isinstance(value, bool) and \
        -(1 << 63) <= value < 1 << 64


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code & 0xFF if isinstance(code, int) else None


def damaged(exc: sqlite3.Error) -> bool:
    """Garbage pages, a truncated file, something that is not a database at all."""
    code = _code(exc)
    if code is not None:
        return code in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc)
    return type(exc) is sqlite3.DatabaseError or "malformed" in text or \
        "not a database" in text


def _cannot_write(exc: sqlite3.Error) -> bool:
    code = _code(exc)
    if code is not None:
        return code in (SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL,
                        SQLITE_CANTOPEN)
    text = str(exc)
    return any(w in text for w in ("readonly", "read-only", "disk is full", "disk I/O",
                                   "unable to open"))


class Store:
    """The history file of one state directory. `notes` collects what the report should
    say about it (a store moved aside, rows skipped, a store read read-only)."""

    def __init__(self, directory: Path, read_only: bool = False) -> None:
        self.dir = directory
        self.path = directory / FILE  # as shown; opened through the held directory (_at)
        self.notes: list[str] = []
        self.read_only: str | None = None  # why this store cannot be written
        self.db: sqlite3.Connection | None = None
        self.columns: tuple[str, ...] = COLUMNS
        self.dfd = -1
        # The directory is walked without another user's links and held open; SQLite and
        # the lock open their files through /proc/self/fd/N, so a path component swapped
        # later changes nothing. A directory to write in must be root's or this user's and
        # writable by nobody else: no one else can plant a link or a file in it.
        try:
            self.dfd = (safepath.open_dir(directory) if read_only else
                        safepath.trusted_dir(directory, create=True, mode=0o750))
        except FileNotFoundError:
            raise StoreError(f"no history in {safepath.show(directory)}") from None
        except OSError as exc:
            raise StoreError(f"state directory {safepath.show(directory)}: "
                             f"{exc.strerror or exc}"
                             + ("" if read_only else "; refusing to keep history there")) \
                from None
        try:
            self._refuse_links()
        except StoreError:
            self._close_dir()
            raise
        if read_only:
            self._open_read_only()
            return
        try:
            self._open()
        except sqlite3.Error as exc:
            if damaged(exc):
                self._quarantine(exc)
                try:
                    self._open()
                except sqlite3.Error as again:
                    raise StoreError(f"history {self.path}: {again}") from None
            elif _cannot_write(exc) and self._exists():
                self._open_read_only()
                self.read_only = f"{exc}"
            else:
                raise StoreError(f"history {self.path}: {exc}") from None

    # -- opening

    def _at(self, name: str = FILE) -> str:
        """`name` in the held state directory, as a path anyone (SQLite) can open."""
        return f"/proc/self/fd/{self.dfd}/{name}"

    def _exists(self, name: str = FILE) -> bool:
        try:
            os.stat(name, dir_fd=self.dfd, follow_symlinks=False)
            return True
        except OSError:
            return False

    def _refuse_links(self) -> None:
        """netdiag's files in the state directory are regular files it made: a link or
        anything else there is refused, never followed."""
        import stat

        for name in (FILE, FILE + "-wal", FILE + "-shm", "history.lock"):
            try:
                st = os.stat(name, dir_fd=self.dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"history {self.dir / name}: {exc.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                raise StoreError(f"state directory {safepath.show(self.dir)}: {name} is "
                                 f"{what}; refusing to use it")

    def _open(self) -> None:
        self.close()
        # A shared lock while opening: a run moving a damaged store aside holds it exclusively
        # until the store and its -wal/-shm files are all gone, so no run opens a new store
        # beside the old journal (which would look damaged in turn and be moved aside twice).
        with self._lock(exclusive=False):
            self.db = sqlite3.connect(self._at(), timeout=30, isolation_level=None)
            self.ino = self._inode()
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.executescript(SCHEMA)
        have = {r[1] for r in self.db.execute("PRAGMA table_info(runs)")}
        missing = [c for c in ("series", "netns_cookie") if c not in have]
        if missing or self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for column in missing:  # a store written by netdiag before series/cookies
                    kind = "TEXT" if column == "series" else "INTEGER"
                    self.db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
                self.db.execute("UPDATE runs SET series = netns WHERE series IS NULL")
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.db.execute("COMMIT")
            except sqlite3.Error:
                self.db.execute("ROLLBACK")
                raise
        self.db.executescript(INDEXES)
        self._check_columns()

    def _open_read_only(self) -> None:
        """For reading a store in a read-only place: ordinary read-only first (sees the WAL
        journal when its shared-memory file can be used), else immutable (cannot see runs
        still in the journal)."""
        self.close()
        if not self._exists():
            self._close_dir()
            raise StoreError(f"no history in {self.dir}")
        uri = "file:" + _uri_path(Path(self._at()))
        last: sqlite3.Error | None = None
        for mode, note in (("?mode=ro", None),
                           ("?immutable=1", "read as immutable: runs still in its WAL journal "
                                            "are not shown")):
            try:
                self.db = sqlite3.connect(uri + mode, uri=True, timeout=30,
                                          isolation_level=None)
                self.db.execute("PRAGMA busy_timeout = 30000")
                self._check_columns()
                if note and self._size(FILE + "-wal"):
                    self.notes.append(f"history {self.path}: {note}")
                self.ino = self._inode()
                return
            except sqlite3.Error as exc:
                last = exc
                self.close()
                if damaged(exc):
                    break
        self._close_dir()
        raise StoreError(f"history {self.path}: cannot read it ({last})")

    def _check_columns(self) -> None:
        have = [r[1] for r in self.db.execute("PRAGMA table_info(runs)")]
        if not have:
            raise sqlite3.DatabaseError("file is not a netdiag history (no runs table)")
        if not {"id", "netns", "taken_at", "counters"} <= set(have):
            raise sqlite3.DatabaseError("file is not a netdiag history (unexpected columns)")
        self.columns = tuple(c if c in have else f"NULL AS {c}" for c in COLUMNS)

    def _inode(self) -> tuple[int, int] | None:
        try:
            st = os.stat(FILE, dir_fd=self.dfd, follow_symlinks=False)
            return st.st_dev, st.st_ino
        except OSError:
            return None

    def _quarantine(self, exc: Exception) -> None:
        """Move a damaged store aside so that this and later runs start a new one. Runs that
        find it damaged at the same moment move it once (an exclusive lock, and the file's
        identity: a run that finds another file in place knows it was moved already)."""
        seen = getattr(self, "ino", None) or self._inode()
        self.close()
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = f"{FILE}.damaged-{stamp}-{os.getpid()}"
        try:
            with self._lock(exclusive=True, exc=exc):
                if self._inode() != seen:  # another run moved it aside already
                    self.notes.append(f"history {self.path} was damaged ({exc}); another run "
                                      "moved it aside; a new history starts")
                    return
                for suffix in ("-wal", "-shm", ""):  # the journal first, the store last
                    if suffix == "" or self._exists(FILE + suffix):
                        os.rename(FILE + suffix, dest + suffix, src_dir_fd=self.dfd,
                                  dst_dir_fd=self.dfd)
        except OSError as err:
            raise StoreError(f"history {self.path} is damaged ({exc}) and cannot be moved "
                             f"aside ({err.strerror})") from None
        self.notes.append(f"history {self.path} was damaged ({exc}); moved aside to "
                          f"{dest}; a new history starts with this run")

    @contextlib.contextmanager
    def _lock(self, exclusive: bool, exc: Exception | None = None):
        """flock on history.lock (shared for opening, exclusive for moving a damaged store
        aside), waiting at most 30 s. Where the lock file cannot be created (a read-only
        directory) there is no one to race with a write: go on without it."""
        import fcntl

        try:
            fd = os.open("history.lock", os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                         os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=self.dfd)
            fh = os.fdopen(fd, "a")
        except OSError:
            if exclusive:
                raise
            yield
            return
        try:
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            deadline = time.monotonic() + 30
            while True:
                try:
                    fcntl.flock(fh, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreError(f"history {self.path}"
                                         + (f" is damaged ({exc}); " if exc else ": ")
                                         + "another run holds its lock") from None
                    time.sleep(0.05)
            yield
        finally:
            fh.close()

    def close(self) -> None:
        """The connection (the held directory stays for a reopen: _close_dir ends it)."""
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None

    def _close_dir(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1

    def __del__(self) -> None:
        self._close_dir()

    def _size(self, name: str) -> int:
        try:
            return os.stat(name, dir_fd=self.dfd, follow_symlinks=False).st_size
        except OSError:
            return 0

    # -- reading

    def _select(self, where: str, args: tuple, limit: int) -> list:
        sql = (f"SELECT {', '.join(self.columns)} FROM runs WHERE {where} "
               f"ORDER BY id DESC LIMIT {int(limit)}")
        return self.db.execute(sql, args).fetchall()

    def _guarded(self, read):
        """A read; a damaged store found on the way is moved aside (when it can be) and
        reads as empty."""
        try:
            return read()
        except sqlite3.Error as exc:
            if not damaged(exc):
                raise StoreError(f"history {self.path}: {exc}") from None
            if self.read_only:
                raise StoreError(f"history {self.path} is damaged ({exc})") from None
            self._quarantine(exc)
            try:
                self._open()
            except sqlite3.Error as again:
                raise StoreError(f"history {self.path}: {again}") from None
            return None

    def previous(self, label: str, ident: Identity) -> tuple[Run | None, str]:
        """The baseline for a run in namespace `label` with identity `ident`, and the series
        the new run belongs to."""
        def read():
            if ident.boot_id and (ident.cookie is not None or ident.inode is not None):
                rows = self._select(
                    "boot_id = ? AND (netns_cookie = ? OR (netns_cookie IS NULL AND "
                    "netns_inode = ?))", (ident.boot_id, ident.cookie, ident.inode),
                    CANDIDATES)
                run = self._good_skipping(rows)
                if run is not None:
                    return run, run.series
            if stable_label(label):
                rows = self._select("netns = ?", (label,), CANDIDATES)
                run = self._good_skipping(rows)
                if run is not None:
                    return run, run.series
            return None, label

        got = self._guarded(read)
        return got if got is not None else (None, label)

    def _good_skipping(self, rows: list) -> Run | None:
        skipped = []
        for row in rows:
            try:
                run = decode_row(row)
            except BadRow as exc:
                skipped.append(f"run {row[0]}: {exc}")
                continue
            if skipped:
                self._note_skipped(skipped)
            return run
        if skipped:
            self._note_skipped(skipped)
        return None

    def _note_skipped(self, skipped: list[str]) -> None:
        self.notes.append(f"history {self.path}: skipped {len(skipped)} unreadable stored "
                          f"run(s) ({'; '.join(skipped[:3])})")

    def series_for(self, label: str) -> str:
        """The series `netdiag history --netns LABEL` shows: the one whose newest run carries
        that label (the label itself when none does)."""
        def read():
            row = self.db.execute("SELECT series FROM runs WHERE netns = ? ORDER BY id DESC "
                                  "LIMIT 1", (label,)).fetchone() \
                if "series" in self.columns else None
            return row[0] if row and isinstance(row[0], str) and row[0] else label
        return self._guarded(read) or label

    def runs(self, series: str, last: int) -> list[Run]:
        def read():
            where = "series = ?" if "series" in self.columns else "netns = ?"
            return self._select(where, (series,), last)
        rows = self._guarded(read) or []
        out, skipped = [], []
        for row in rows:
            try:
                out.append(decode_row(row))
            except BadRow as exc:
                skipped.append(f"run {row[0]}: {exc}")
        if skipped:
            self._note_skipped(skipped)
        return list(reversed(out))

    def namespaces(self) -> list[str]:
        """The label each series has now (its newest run's)."""
        def read():
            if "series" not in self.columns:
                return [r[0] for r in self.db.execute("SELECT DISTINCT netns FROM runs "
                                                      "ORDER BY 1")]
            rows = self.db.execute(
                "SELECT netns FROM runs WHERE id IN (SELECT MAX(id) FROM runs GROUP BY "
                "COALESCE(series, netns)) ORDER BY 1").fetchall()
            return [r[0] for r in rows if isinstance(r[0], str)]
        return self._guarded(read) or []

    # -- writing

    def record(self, facts: Facts, status: str, label: str, ident: Identity,
               series: str) -> None:
        if facts.counters is None:
            return
        if self.read_only:
            raise StoreError(f"history {self.path} cannot be written ({self.read_only})")
        softnet = [[c.cpu, c.processed, c.dropped, c.time_squeeze]
                   for c in facts.softnet.cpus] if facts.softnet else None
        # Socket counts only from a census of every socket: `backlog` or `closewait` count
        # some states, and a history row of theirs would read as the namespace's.
        sockets = facts.census.by_state if facts.census and not facts.census.filtered \
            else None
        now = facts.counters.taken_at or time.time()
        values = (label, series, ident.inode, ident.cookie, ident.boot_id, now, status,
                  json.dumps(facts.counters.counters), json.dumps(softnet) if softnet else None,
                  json.dumps(sockets) if sockets is not None else None)
        for attempt in (1, 2):
            try:
                self._insert(values, now, series)
                return
            except sqlite3.Error as exc:
                if damaged(exc) and attempt == 1:
                    self._quarantine(exc)
                    try:
                        self._open()
                    except sqlite3.Error as again:
                        raise StoreError(f"history {self.path}: {again}") from None
                    continue
                raise StoreError(f"cannot write history {self.path}: {exc}") from None

    def _insert(self, values: tuple, now: float, series: str) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO runs (netns, series, netns_inode, netns_cookie, boot_id, "
                       "taken_at, status, counters, softnet, sockets) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            db.execute("DELETE FROM runs WHERE taken_at < ?", (now - KEEP_SECONDS,))
            db.execute("DELETE FROM runs WHERE series = ? AND id <= (SELECT id FROM runs "
                       "WHERE series = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                       (series, series, KEEP_RUNS))
            db.execute("COMMIT")
        except sqlite3.Error:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.absolute()))


def attach_previous(facts: Facts, prev: Run, ident: Identity) -> None:
    """Make the previous run the baseline the rules judge counters against."""
    now = facts.counters.taken_at if facts.counters and facts.counters.taken_at else \
        time.time()
    facts.counters_before = CounterFacts(counters=prev.counters, taken_at=prev.taken_at)
    if prev.softnet:
        facts.softnet_before = SoftnetFacts(cpus=[SoftnetCpu(c, p, d, s)
                                                  for c, p, d, s in prev.softnet])
    # Positive in every case: where the clock went back, the reset below says the seconds
    # between the runs are unknown, and the counter policy reports no rate.
    facts.interval = max(now - prev.taken_at, 0.001)
    facts.baseline = "previous run"
    reason = reset_reason(prev.boot_id, prev.netns_inode, prev.netns_cookie, prev.taken_at,
                          ident, now)
    if reason:
        facts.baseline_reset = reason


def reset_reason(boot_id: str | None, inode: int | None, cookie: int | None, taken_at: float,
                 now: Identity, now_at: float) -> str | None:
    """Why counters stored at `taken_at` cannot be compared with those now (None: they can)."""
    if boot_id and now.boot_id and boot_id != now.boot_id:
        return "the host rebooted since the previous run"
    if now.same_namespace(inode, cookie) is False:
        return "the network namespace was recreated since the previous run"
    if now_at <= taken_at:
        stamp = datetime.datetime.fromtimestamp(taken_at, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        return f"the clock went back: the previous run is stored at {stamp}, later than now"
    return None
