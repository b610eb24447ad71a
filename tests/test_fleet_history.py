"""--state-dir history that never wedges: damaged stores, bad rows, a clock stepped back, a full
disk, a read-only store; per-namespace history with --all-netns, keyed by namespace identity."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, NetNS, finding, load_json, require_root, run_json, run_netdiag


def _history_errors(report: dict) -> list[str]:
    return [e["message"] for e in report["errors"] if e["collector"] == "history"]


def _overflow(report: dict) -> dict:
    return finding(report, "backlog.listen_overflow")["evidence"]["ListenOverflows"]


def _backlog(state: Path) -> tuple[dict, int]:
    """A live run in the namespace the tests run in (no privilege needed)."""
    report, rc = run_json("backlog", "--state-dir", str(state))
    assert rc in (0, 1, 2), report["errors"]
    return report, rc


def _rows(state: Path) -> list[tuple]:
    with sqlite3.connect(str(state / "history.sqlite")) as db:
        return db.execute("SELECT id, netns, taken_at, counters FROM runs ORDER BY id").fetchall()


def _plant(state: Path, changes: list[dict]) -> None:
    """Rows as damage or another version would leave them: copies of the newest stored run,
    each with the columns in one dict of `changes` replaced."""
    cols = ("netns", "series", "netns_inode", "netns_cookie", "boot_id", "taken_at", "status",
            "counters")
    with sqlite3.connect(str(state / "history.sqlite")) as db:
        row = db.execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY id DESC LIMIT 1"
                         ).fetchone()
        for change in changes:
            values = dict(zip(cols, row), **change)
            db.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES "
                       f"({', '.join('?' * len(cols))})", tuple(values[c] for c in cols))


def test_garbage_pages_are_moved_aside_once_and_history_restarts(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "history.sqlite").write_bytes(os.urandom(3 * 4096))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "netdiag", "backlog", "--json", "--state-dir", str(state)]
    # Four runs find it damaged at the same moment: every report comes, it is moved once.
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              cwd="/") for _ in range(4)]
    notes = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode in (0, 1, 2) and b"Traceback" not in err, err
        notes += _history_errors(load_json(out))
    aside = sorted(p.name for p in state.iterdir() if ".damaged-" in p.name)
    assert len(aside) == 1, aside
    assert any(f"moved aside to {aside[0]}" in n for n in notes), notes
    assert all("damaged" in n for n in notes)
    report, _ = _backlog(state)
    assert _history_errors(report) == []
    assert _overflow(report)["since"] == "previous run"


def test_truncated_store_is_moved_aside(tmp_path):
    state = tmp_path / "state"
    for _ in range(2):
        _backlog(state)
    db = sqlite3.connect(str(state / "history.sqlite"))
    db.execute("CREATE TABLE padding (x BLOB)")
    db.executemany("INSERT INTO padding VALUES (?)", [(os.urandom(3000),) for _ in range(30)])
    db.commit()
    db.close()
    path = state / "history.sqlite"
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    os.truncate(path, path.stat().st_size // 3)
    report, _ = _backlog(state)
    notes = _history_errors(report)
    assert any("was damaged" in n and "moved aside" in n for n in notes), notes
    assert "since" not in _overflow(report)  # a new history: no baseline yet
    again, _ = _backlog(state)
    assert _history_errors(again) == [] and _overflow(again)["since"] == "previous run"


def test_bad_newest_rows_are_skipped_not_fatal(tmp_path):
    state = tmp_path / "state"
    first, _ = _backlog(state)
    _plant(state, [{"counters": "{not json"},
                   {"taken_at": "yesterday", "counters": '{"TcpExt": {"ListenOverflows": 1}}'},
                   {"counters": '{"TcpExt": {"ListenOverflows": "many"}}'}])
    report, _ = _backlog(state)
    ev = _overflow(report)
    assert ev["since"] == "previous run" and ev["seconds"] > 0 and not ev.get("reset")
    [note] = _history_errors(report)
    assert "skipped 3 unreadable stored run(s)" in note and "bad JSON" in note
    for _ in range(2):  # a later run is not wedged either: it compares with the run stored
        report, _ = _backlog(state)
        assert _history_errors(report) == [] and _overflow(report)["since"] == "previous run"
    assert len(_rows(state)) == 7


def test_rows_out_of_range_are_skipped_by_runs_and_by_history(tmp_path):
    """A time no calendar shows (1e308) or a counter no kernel keeps (10^400) is a bad row:
    skipped and said by a run and by `history`, never an OverflowError."""
    state = tmp_path / "state"
    _backlog(state)
    _plant(state, [{"taken_at": 1e308},
                   {"counters": '{"TcpExt": {"ListenOverflows": 1' + "0" * 400 + "}}"}])
    report, _ = _backlog(state)
    assert not [e for e in report["errors"] if e["collector"] != "history"], report["errors"]
    [note] = _history_errors(report)
    assert "skipped 2 unreadable stored run(s)" in note and "1970 and 9999" in note, note
    assert _overflow(report)["since"] == "previous run"
    for fmt in ("table", "json"):
        shown = run_netdiag("history", "--state-dir", str(state), "--format", fmt)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
        assert "internal error" not in shown.stderr and "unreadable" in shown.stderr


def test_a_run_stored_in_the_future_is_a_reset_once(tmp_path):
    state = tmp_path / "state"
    _backlog(state)
    with sqlite3.connect(str(state / "history.sqlite")) as db:
        db.execute("UPDATE runs SET taken_at = taken_at + 3600")  # the clock was ahead then
    report, _ = _backlog(state)
    ev = _overflow(report)
    assert ev["reset"] is True and "clock went back" in ev["reset_reason"]
    assert ev.get("rate_per_s") is None and (ev.get("seconds") is None or ev["seconds"] > 0)
    assert "-" not in json.dumps(report["findings"]).split('"rate_per_s"')[-1][:3]
    again, _ = _backlog(state)  # compared with the run just stored, not the future one
    ev = _overflow(again)
    assert not ev.get("reset") and ev["seconds"] > 0 and ev["delta"] >= 0
    hist = load_json(run_netdiag("history", "--state-dir", str(state), "--json").stdout)
    assert [r.get("reset") for r in hist["runs"]] == [None, "clock went back", None]
    assert all(r["seconds"] is None or r["seconds"] > 0 for r in hist["runs"])
    table = run_netdiag("history", "--state-dir", str(state))
    assert table.returncode == 0 and "↺ clock" in table.stdout


def _in_private_mounts(script: str, state: Path) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace (its mounts vanish with it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), STATE=str(state), PY=sys.executable,
               COLUMNS="100")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                           script], capture_output=True, text=True, timeout=300, env=env,
                          cwd="/")


def test_full_disk_still_reports_and_says_history_was_not_kept(tmp_path):
    require_root("a tmpfs in a private mount namespace")
    state = tmp_path / "state"
    state.mkdir()
    out = _in_private_mounts(
        'mount -t tmpfs -o size=1m,mode=0750 netdiag-full "$STATE"\n'
        '"$PY" -m netdiag backlog --json --state-dir "$STATE" > /dev/null\n'
        'dd if=/dev/zero of="$STATE/fill" bs=4k 2>/dev/null || true\n'
        '"$PY" -m netdiag backlog --json --state-dir "$STATE" || true\n', state)
    assert "Traceback" not in out.stderr, out.stderr
    report = load_json(out.stdout)
    notes = _history_errors(report)
    assert any("this run was not stored" in n for n in notes), notes
    assert _overflow(report)["since"] == "previous run"  # the stored baseline still served
    # An empty full disk: no store can be made at all; the report still comes.
    out = _in_private_mounts(
        'mount -t tmpfs -o size=64k,mode=0750 netdiag-full "$STATE"\n'
        'dd if=/dev/zero of="$STATE/fill" bs=4k 2>/dev/null || true\n'
        '"$PY" -m netdiag backlog --json --state-dir "$STATE/sub" || true\n', state)
    report = load_json(out.stdout)
    assert any("history was not kept" in n for n in _history_errors(report))


def test_read_only_store_gives_baseline_and_history(tmp_path):
    require_root("a read-only bind mount in a private mount namespace")
    state = tmp_path / "state"
    for _ in range(2):
        _backlog(state)
    out = _in_private_mounts(
        'mount --bind "$STATE" "$STATE"\n'
        'mount -o remount,bind,ro "$STATE"\n'
        '"$PY" -m netdiag backlog --json --state-dir "$STATE" > "$STATE.check.json" || true\n'
        '"$PY" -m netdiag history --json --state-dir "$STATE"\n', state)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    hist = load_json(out.stdout)
    assert len(hist["runs"]) == 2
    report = load_json(Path(str(state) + ".check.json").read_text())
    assert _overflow(report)["since"] == "previous run"
    assert any("not stored" in n for n in _history_errors(report)), report["errors"]
    assert len(_rows(state)) == 2  # nothing was written


def test_all_netns_keeps_history_per_namespace_and_follows_renames(tmp_path):
    require_root("several namespaces")
    state = str(tmp_path / "state")
    with NetNS() as busy, NetNS() as quiet:
        first, _ = run_json("check", "--all-netns", "--state-dir", state)
        assert not [e for e in first["errors"] if e["collector"] == "history"]
        busy.spawn_load("listen", "--port", "8093", "--backlog", "1", "--count", "12")
        time.sleep(0.2)
        second, _ = run_json("check", "--all-netns", "--state-dir", state)
        moved = [f for f in second["findings"] if f["id"] == "backlog.listen_overflow"
                 and f["netns"] == busy.name]
        assert moved, "the namespace whose counter moved has a finding"
        ev = moved[0]["evidence"]["ListenOverflows"]
        assert ev["since"] == "previous run" and ev["delta"] > 0 and not ev.get("reset")
        assert not any(f["id"] == "backlog.listen_overflow" for f in second["findings"]
                       if f["netns"] == quiet.name)
        for ns, grew in ((busy, True), (quiet, False)):
            hist = load_json(run_netdiag("history", "--state-dir", state, "--netns", ns.name,
                                          "--json").stdout)
            assert len(hist["runs"]) == 2 and not hist["runs"][1].get("reset")
            assert (hist["runs"][1]["ListenOverflows"] > 0) is grew
        # Rename: the same namespace under another name keeps its history.
        new = busy.name + "r"
        Path(f"/run/netns/{new}").touch()
        subprocess.run(["mount", "--bind", f"/run/netns/{busy.name}", f"/run/netns/{new}"],
                       check=True)
        try:
            subprocess.run(["ip", "netns", "del", busy.name], check=True)
            third, _ = run_json("backlog", "--state-dir", state, netns=new)
            ev = _overflow(third)
            assert ev["since"] == "previous run" and not ev.get("reset"), ev
            hist = load_json(run_netdiag("history", "--state-dir", state, "--netns", new,
                                          "--json").stdout)
            assert len(hist["runs"]) == 3 and hist["runs"][0]["netns"] == busy.name
        finally:
            for p in busy.procs:
                p.kill()
            subprocess.run(["ip", "netns", "del", new], check=False)
            busy.name = new


def _planted(tmp_path: Path) -> tuple[Path, Path, int]:
    """A sticky, world-writable directory (like /tmp) and a file only root may write."""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = tmp_path / "victim"
    victim.write_text("")
    os.chmod(victim, 0o600)
    return shared, victim, nobody


def test_another_users_state_directory_or_links_are_not_written_through(tmp_path):
    """fs.protected_symlinks may be off (it is on this test machine): another user's state
    directory, links in it, or a link to a directory only root may write are refused, the
    report still comes, and nothing is written where the links point."""
    require_root("files owned by another user")
    shared, victim, nobody = _planted(tmp_path)
    rootonly = tmp_path / "rootonly"
    rootonly.mkdir(mode=0o700)
    theirs = shared / "state"  # their directory, with their links at netdiag's names
    theirs.mkdir()
    os.symlink(victim, theirs / "history.sqlite")
    os.symlink(rootonly / "made-by-root", theirs / "history.lock")
    for p in (theirs / "history.sqlite", theirs / "history.lock", theirs):
        os.lchown(p, nobody, nobody)
    link = shared / "statelink"  # their link to a directory only root may write
    os.symlink(rootonly, link)
    os.lchown(link, nobody, nobody)
    open_dir = shared / "open"  # a directory anybody may write in (no planted link yet)
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    for state, needle in ((theirs, "owned by uid"), (link, "statelink is a symbolic link"),
                          (open_dir, "writable by others (mode 0777)")):
        report, rc = run_json("backlog", "--state-dir", str(state))
        assert rc in (0, 1, 2) and report["findings"], report["errors"]
        [note] = _history_errors(report)
        assert needle in note and "history was not kept" in note, note
    assert victim.read_text() == "" and os.listdir(rootonly) == []
    assert os.listdir(open_dir) == []
    # A link among netdiag's own names in a directory of root's is refused too.
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    os.symlink(victim, mine / "history.sqlite")
    report, _ = run_json("backlog", "--state-dir", str(mine))
    [note] = _history_errors(report)
    assert "history.sqlite is a symbolic link; refusing" in note, note
    assert victim.read_text() == ""
    _backlog(rootonly)  # root's own history there: not shown through their link either
    shown = run_netdiag("history", "--state-dir", str(link))
    assert shown.returncode == 3 and "statelink is a symbolic link" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_history_shows_socket_counts_only_from_a_census_of_every_socket(tmp_path):
    """`backlog` counts listeners only (and `closewait` one state): a row of theirs would read
    as the namespace's socket counts; its sockets are not stored (shown as unknown)."""
    state = tmp_path / "state"
    _backlog(state)
    report, rc = run_json("check", "--state-dir", str(state))
    assert rc in (0, 1, 2), report["errors"]
    hist = load_json(run_netdiag("history", "--state-dir", str(state), "--json").stdout)
    first, second = hist["runs"][-2:]
    assert first["sockets"] is None and first["TIME_WAIT"] is None
    assert isinstance(second["sockets"], int)  # a census of every socket: stored


def test_a_command_without_counters_says_it_stores_no_run(tmp_path):
    """`sockets --state-dir` reads no counters, so no run can be stored: said in `errors`
    (it stored nothing without a word)."""
    state = tmp_path / "state"
    report, rc = run_json("sockets", "--state-dir", str(state))
    assert rc in (0, 1, 2)
    [note] = _history_errors(report)
    assert "reads no counters, so it stores no run" in note
    assert not (state / "history.sqlite").exists() or _rows(state) == []
