"""Every --output case, run as root inside a private mount namespace on a private tmpfs, so
device nodes, FIFOs and other users' links are real and the host's /dev is never touched.

    unshare -m --propagation private python3 output_cases.py MOUNTPOINT FIXTURE

Mounts a tmpfs on MOUNTPOINT (visible only in this mount namespace), plays each case with
the real CLI (python -m netdiag check --root FIXTURE --json --output ...), and prints one
JSON object: case -> what was observed. The test asserts on it. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import pty
import pwd
import select
import socket
import stat
import subprocess
import sys
import threading
import time

NETDIAG = [sys.executable, "-m", "netdiag", "check", "--json"]


def run(target: str, fixture: str, timeout: float = 120) -> dict:
    proc = subprocess.run([*NETDIAG, "--root", fixture, "--output", target],
                          capture_output=True, text=True, timeout=timeout, cwd="/")
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def kind(path: str) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "absent"
    for name, test in (("link", stat.S_ISLNK), ("chr", stat.S_ISCHR), ("blk", stat.S_ISBLK),
                       ("fifo", stat.S_ISFIFO), ("sock", stat.S_ISSOCK), ("dir", stat.S_ISDIR),
                       ("file", stat.S_ISREG)):
        if test(mode):
            return name
    return "other"


def tree(root: str) -> dict[str, str]:
    """Every path under root with its kind and, for files, its content."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            k = kind(p)
            if k == "file":
                with open(p, "rb") as fh:
                    k += ":" + fh.read().decode("utf-8", "replace")
            out[os.path.relpath(p, root)] = k
    return out


def case_null_device(d: str, fixture: str) -> dict:
    node = os.path.join(d, "null")
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    res = run(node, fixture)
    st = os.lstat(node)
    res.update(kind=kind(node), rdev=[os.major(st.st_rdev), os.minor(st.st_rdev)])
    return res


def case_tty_device(d: str, fixture: str) -> dict:
    """A character device that shows what it receives: /dev/tty (5:0), the writer's own
    controlling terminal, here a pseudo-terminal whose master side this process reads."""
    node = os.path.join(d, "tty")
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(5, 0))
    pid, master = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal; stdio elsewhere
        try:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            err = os.open(os.path.join(d, "tty-stderr"), os.O_WRONLY | os.O_CREAT, 0o600)
            os.dup2(err, 2)
            os.execv(sys.executable, [*NETDIAG, "--root", fixture, "--output", node])
        finally:
            os._exit(127)
    received = b""
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            received += chunk
            if chunk:
                continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    os.close(master)
    with open(os.path.join(d, "tty-stderr")) as fh:
        stderr = fh.read()
    os.unlink(os.path.join(d, "tty-stderr"))
    text = received.decode("utf-8", "replace").replace("\r\n", "\n")
    return {"rc": os.waitstatus_to_exitcode(status) if status is not None else None,
            "received": text, "stderr": stderr, "kind": kind(node)}


def case_fifo_with_reader(d: str, fixture: str) -> dict:
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo, 0o600)
    got: list[bytes] = []

    def reader() -> None:  # a blocking open waits for the writer; bounded by the join below
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    res = run(fifo, fixture)
    t.join(timeout=60)
    res.update(received=got[0].decode() if got else None, kind=kind(fifo))
    return res


def case_fifo_without_reader(d: str, fixture: str) -> dict:
    fifo = os.path.join(d, "lonely-fifo")
    os.mkfifo(fifo, 0o600)
    res = run(fifo, fixture, timeout=60)
    res["kind"] = kind(fifo)
    return res


def case_directory(d: str, fixture: str) -> dict:
    target = os.path.join(d, "a-dir")
    os.mkdir(target)
    res = run(target, fixture)
    res.update(kind=kind(target), entries=os.listdir(target))
    return res


def case_socket(d: str, fixture: str) -> dict:
    path = os.path.join(d, "sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    try:
        res = run(path, fixture)
    finally:
        s.close()
    res["kind"] = kind(path)
    return res


def case_block_device(d: str, fixture: str) -> dict:
    node = os.path.join(d, "blk")
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    res = run(node, fixture)
    res["kind"] = kind(node)
    return res


def case_replaced_file(d: str, fixture: str, user: pwd.struct_passwd) -> dict:
    target = os.path.join(d, "owned.json")
    with open(target, "w") as fh:
        fh.write("old content\n")
    os.chown(target, user.pw_uid, user.pw_gid)
    os.chmod(target, 0o640)
    res = run(target, fixture)
    st = os.lstat(target)
    with open(target) as fh:
        res.update(kind=kind(target), uid=st.st_uid, gid=st.st_gid,
                   mode=oct(stat.S_IMODE(st.st_mode)), content=fh.read())
    return res


def case_new_file(d: str, fixture: str) -> dict:
    target = os.path.join(d, "new.json")
    old = os.umask(0o027)
    try:
        res = run(target, fixture)
    finally:
        os.umask(old)
    st = os.lstat(target)
    with open(target) as fh:
        res.update(kind=kind(target), mode=oct(stat.S_IMODE(st.st_mode)), content=fh.read())
    return res


def case_foreign_symlink(d: str, fixture: str, user: pwd.struct_passwd) -> dict:
    """In a sticky, world-writable directory (like /tmp or a shared textfile directory),
    another user plants a link at the target pointing to a file root owns."""
    shared = os.path.join(d, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    victim = os.path.join(d, "victim")
    with open(victim, "w") as fh:
        fh.write("precious\n")
    os.chmod(victim, 0o644)
    link = os.path.join(shared, "metrics.json")
    os.symlink(victim, link)
    os.lchown(link, user.pw_uid, user.pw_gid)
    res = run(link, fixture)
    with open(victim) as fh:
        res["victim"] = fh.read()
    res["kind"] = kind(link)
    if res["kind"] == "file":
        with open(link) as fh:
            res["content"] = fh.read()
        res["uid"] = os.lstat(link).st_uid
    res["shared"] = sorted(os.listdir(shared))
    return res


def case_own_symlink(d: str, fixture: str) -> dict:
    """root's own link (a textfile path pointing into place) is followed."""
    real = os.path.join(d, "real.json")
    with open(real, "w") as fh:
        fh.write("old\n")
    link = os.path.join(d, "mine.json")
    os.symlink(real, link)
    res = run(link, fixture)
    with open(real) as fh:
        res.update(kind=kind(link), real=fh.read())
    return res


def case_temp_names(d: str, fixture: str) -> dict:
    """The temporary file's name, seen from inside the write, over several writes: unique,
    unpredictable, never the old `.NAME.PID.tmp`; none is left behind. Links planted at the
    old predictable name for this process are not followed."""
    sys.path.insert(0, os.environ["NETDIAG_REPO"])
    from netdiag.output import write_report

    target = os.path.join(d, "tmpnames", "r.prom")
    os.makedirs(os.path.dirname(target))
    victim = os.path.join(d, "tmp-victim")
    with open(victim, "w") as fh:
        fh.write("precious\n")
    planted = os.path.join(os.path.dirname(target), f".r.prom.{os.getpid()}.tmp")
    os.symlink(victim, planted)
    names = []

    def write(fh) -> None:
        names.append(os.readlink(f"/proc/self/fd/{fh.fileno()}"))
        fh.write("netdiag_status 0\n")

    for _ in range(20):
        write_report(target, write)
    with open(victim) as fh:
        victim_text = fh.read()
    left = sorted(os.listdir(os.path.dirname(target)))
    os.unlink(planted)
    return {"names": names, "pid": os.getpid(), "left": left, "victim": victim_text}


def case_foreign_parent_link(d: str, fixture: str, user: pwd.struct_passwd) -> dict:
    """Another user's link as a directory of the path (in a sticky shared directory, pointing
    at a directory only root may write): refused, nothing written through it."""
    shared = os.path.join(d, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    rootonly = os.path.join(d, "rootonly")
    os.mkdir(rootonly, 0o700)
    link = os.path.join(shared, "linkdir")
    os.symlink(rootonly, link)
    os.lchown(link, user.pw_uid, user.pw_gid)
    res = run(os.path.join(link, "report.json"), fixture)
    res.update(rootonly=sorted(os.listdir(rootonly)), shared=sorted(os.listdir(shared)))
    return res


def case_swapped_fifo(d: str, fixture: str) -> dict:
    """The FIFO at the target is swapped, while the report is made, for a link to a file
    root owns, or for a hard link to it: neither is written."""
    sys.path.insert(0, os.environ["NETDIAG_REPO"])
    from netdiag.errors import UsageError
    from netdiag.output import write_report

    victim = os.path.join(d, "victim")
    out = {}
    for how in ("symlink", "hardlink"):
        with open(victim, "w") as fh:
            fh.write("precious\n")
        fifo = os.path.join(d, f"fifo-{how}")
        os.mkfifo(fifo, 0o666)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader: the open would pass

        def write(fh, fifo=fifo, how=how) -> None:
            os.unlink(fifo)
            (os.symlink if how == "symlink" else os.link)(victim, fifo)
            fh.write("netdiag_status 2\n")

        try:
            write_report(fifo, write)
            error = None
        except UsageError as exc:
            error = str(exc)
        finally:
            os.close(reader)
        with open(victim) as fh:
            out[how] = {"error": error, "victim": fh.read()}
        os.unlink(fifo)
    return out


def case_own_descriptor(d: str, fixture: str) -> dict:
    """root's link to /proc/self/fd/1 (what /dev/stdout is): the report goes to this
    process's standard output (a pipe here); the link stays a link."""
    link = os.path.join(d, "stdout")
    os.symlink("/proc/self/fd/1", link)
    res = run(link, fixture)
    res["kind"] = kind(link)
    return res


def main() -> None:
    mnt, fixture = sys.argv[1], sys.argv[2]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64m", "netdiag-test", mnt],
                   check=True)
    user = pwd.getpwnam("nobody")
    results = {}
    cases = [("null_device", case_null_device), ("tty_device", case_tty_device),
             ("fifo_with_reader", case_fifo_with_reader),
             ("fifo_without_reader", case_fifo_without_reader),
             ("directory", case_directory), ("socket", case_socket),
             ("block_device", case_block_device),
             ("replaced_file", lambda d, f: case_replaced_file(d, f, user)),
             ("new_file", case_new_file),
             ("foreign_symlink", lambda d, f: case_foreign_symlink(d, f, user)),
             ("own_symlink", case_own_symlink), ("temp_names", case_temp_names),
             ("foreign_parent_link", lambda d, f: case_foreign_parent_link(d, f, user)),
             ("swapped_fifo", case_swapped_fifo), ("own_descriptor", case_own_descriptor)]
    for name, fn in cases:
        d = os.path.join(mnt, name)
        os.mkdir(d)
        before = tree(mnt)
        results[name] = fn(d, fixture)
        results[name]["elsewhere_changed"] = sorted(
            k for k, v in tree(mnt).items()
            if not k.startswith(name + "/") and before.get(k) != v)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
