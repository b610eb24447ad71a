"""--output FILE cannot be turned against the host: every case played as root in a private
mount namespace on a private tmpfs (tests/helpers/output_cases.py), never on the real /dev."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from conftest import HERE, HOSTS, REPO, load_json, require_root

BUSY = str(HOSTS / "linux-6.18-busy")
HELPER = HERE / "helpers" / "output_cases.py"


@pytest.fixture(scope="module")
def cases():
    require_root("device nodes and a private mount namespace")
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for the --output cases")
    mnt = f"/tmp/netdiag-output-{uuid.uuid4().hex[:8]}"
    os.mkdir(mnt)
    try:
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                               str(HELPER), mnt, BUSY], capture_output=True, text=True,
                              timeout=600, cwd="/",
                              env=dict(os.environ, PYTHONPATH=str(REPO),
                                       NETDIAG_REPO=str(REPO)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        # The tmpfs lived only in that namespace: nothing is left on the host's side.
        assert os.listdir(mnt) == []
    finally:
        os.rmdir(mnt)
    return json.loads(proc.stdout)  # not netdiag output (the case runner's results)


def report_of(text: str) -> dict:
    report = load_json(text)
    assert report["schema"] == "netdiag/2" and report["status"] == "warning"
    return report


def refused(case: dict, needle: str) -> None:
    assert case["rc"] == 3 and case["stdout"] == ""
    lines = case["stderr"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in case["stderr"], case["stderr"]
    assert lines[0].startswith("netdiag: error: --output ") and needle in lines[0], lines


def test_a_null_device_stays_a_device(cases):
    c = cases["null_device"]
    assert c["rc"] == 1 and c["stderr"] == ""  # the busy fixture warns
    assert c["kind"] == "chr" and c["rdev"] == [1, 3]


def test_a_character_device_receives_the_report(cases):
    c = cases["tty_device"]
    assert c["rc"] == 1, c["stderr"]
    assert c["kind"] == "chr"
    report_of(c["received"])


def test_a_fifo_with_a_reader_gets_the_report(cases):
    c = cases["fifo_with_reader"]
    assert c["rc"] == 1 and c["kind"] == "fifo"
    report_of(c["received"])


def test_a_fifo_nobody_reads_fails_at_once(cases):
    c = cases["fifo_without_reader"]
    refused(c, "a FIFO nobody is reading")
    assert c["kind"] == "fifo"


@pytest.mark.parametrize("name,needle", [("directory", "a directory; refusing"),
                                         ("socket", "a socket; refusing"),
                                         ("block_device", "a block device; refusing")])
def test_refused_targets(cases, name, needle):
    c = cases[name]
    refused(c, needle)
    assert c["kind"] == {"directory": "dir", "socket": "sock", "block_device": "blk"}[name]
    if name == "directory":
        assert c["entries"] == []  # no temporary file left inside either


def test_a_replaced_file_keeps_its_owner_and_mode(cases):
    import pwd

    nobody = pwd.getpwnam("nobody")
    c = cases["replaced_file"]
    assert c["rc"] == 1 and c["kind"] == "file"
    assert (c["uid"], c["gid"], c["mode"]) == (nobody.pw_uid, nobody.pw_gid, "0o640")
    report_of(c["content"])


def test_a_new_file_follows_the_umask(cases):
    c = cases["new_file"]
    assert c["rc"] == 1 and c["kind"] == "file" and c["mode"] == "0o640"
    report_of(c["content"])


def test_another_users_link_is_replaced_not_followed(cases):
    c = cases["foreign_symlink"]
    assert c["rc"] == 1, c["stderr"]
    assert c["victim"] == "precious\n"  # the pointee is untouched
    assert c["kind"] == "file" and c["uid"] == 0
    report_of(c["content"])
    assert c["shared"] == ["metrics.json"]  # and no temporary file left behind


def test_roots_own_link_is_followed(cases):
    c = cases["own_symlink"]
    assert c["rc"] == 1 and c["kind"] == "link"
    report_of(c["real"])


def test_temporary_names_are_unpredictable(cases):
    c = cases["temp_names"]
    names = [os.path.basename(n) for n in c["names"]]
    assert len(names) == 20 and len(set(names)) == 20
    for n in names:
        assert n.startswith(".r.prom.") and n.endswith(".tmp")
        assert str(c["pid"]) not in n
        assert len(n) - len(".r.prom..tmp") >= 8  # random part
    assert c["left"] == [f".r.prom.{c['pid']}.tmp", "r.prom"]  # only the planted link
    assert c["victim"] == "precious\n"


def test_another_users_link_in_the_directories_is_not_followed(cases):
    c = cases["foreign_parent_link"]
    refused(c, "linkdir is a symbolic link owned by uid")
    assert c["rootonly"] == [] and c["shared"] == ["linkdir"]


@pytest.mark.parametrize("how,needle", [("symlink", "became a symbolic link"),
                                        ("hardlink", "was replaced while the report was made")])
def test_a_fifo_swapped_while_the_report_is_made_is_not_written(cases, how, needle):
    c = cases["swapped_fifo"][how]
    assert c["victim"] == "precious\n"
    assert c["error"] is not None and needle in c["error"], c["error"]


def test_own_standard_output_through_a_link(cases):
    c = cases["own_descriptor"]
    assert c["rc"] == 1 and c["kind"] == "link", c["stderr"]
    report_of(c["stdout"])


def test_nothing_else_is_written(cases):
    for name, c in cases.items():
        assert c["elsewhere_changed"] == [], name
