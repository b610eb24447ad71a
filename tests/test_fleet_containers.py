"""--all-netns on container hosts: namespaces named by pod and container, from cgroup paths and
the runtimes' state files (recorded layouts of containerd, CRI-O and Docker under an injected
root), with real namespaces and processes; the holder process when nothing is known."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FIXTURES, require_root, run_json, run_netdiag

LAYOUTS = FIXTURES / "containers"
SANDBOX = "5b1f0c9d2e3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def _root(tmp_path: Path, netns_name: str = "cni-test") -> Path:
    """One host root holding the three runtimes' layouts."""
    root = tmp_path / "host"
    for runtime in ("containerd", "crio", "docker"):
        shutil.copytree(LAYOUTS / runtime, root, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("cgroup*"))
    bundle = root / ("run/containerd/io.containerd.runtime.v2.task/k8s.io/"
                     f"{SANDBOX}/config.json")
    bundle.write_text(bundle.read_text().replace("@NETNS_NAME@", netns_name))
    return root


def _fake_cgroup(root: Path, pid: int, layout: str) -> None:
    runtime, _, variant = layout.partition(":")
    src = LAYOUTS / runtime / (f"cgroup-{variant}" if variant else "cgroup")
    dest = root / "proc" / str(pid) / "cgroup"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(src.read_text())


def test_cgroup_layouts_and_state_files(tmp_path):
    from netdiag.containers import Labeller, cgroup_container, clean

    root = _root(tmp_path)
    for pid, layout in ((11, "containerd"), (12, "crio"), (13, "docker"),
                        (14, "docker:v1"), (15, "docker:unknown"), (16, "docker:host")):
        _fake_cgroup(root, pid, layout)
    lab = Labeller(str(root))
    nginx = lab.by_process(11)
    assert (nginx.runtime, nginx.name, nginx.pod_name, nginx.pod_namespace) == (
        "containerd", "nginx", "web-7d4b9c6f5-x2k8p", "shop")
    assert nginx.pod_uid == "3f0c6a52-8d1e-4f5b-9a0e-2b7c1d4e5f60"
    assert nginx.label() == "pod:shop/web-7d4b9c6f5-x2k8p"
    redis = lab.by_process(12)
    assert (redis.runtime, redis.label()) == ("cri-o", "pod:cache/redis-0")
    api = lab.by_process(13)
    assert (api.runtime, api.label()) == ("docker", "container:billing-api-1")
    assert lab.by_process(14).label() == "container:billing-api-1"  # cgroup v1, cgroupfs
    unknown = lab.by_process(15)
    assert unknown.label() == "container:ffffffffffff" and unknown.runtime == "docker"
    assert lab.by_process(16) is None and lab.by_process(99) is None
    # Named namespaces pinned by containerd / CRI-O: the pod, via the sandbox's bundle.
    assert lab.by_name("cni-test", 0).label() == "pod:shop/web-7d4b9c6f5-x2k8p"
    assert lab.by_name("0e9d8c7b-6a5f-4e3d-2c1b-0a9f8e7d6c5b", 0).label() == \
        "pod:cache/redis-0"
    assert lab.by_name("nothing", 0) is None
    # Docker's sandbox key is not a namespace file here: no inode match, no crash.
    assert lab.by_inode(1, 1) is None
    assert cgroup_container("0::/kubepods/burstable/pod3f0c6a52-8d1e-4f5b-9a0e-2b7c1d4e5f60/"
                            + "a" * 64 + "\n")[0] == "a" * 64
    assert clean("pod:x/\x1b[31mred\n") == "pod:x/?[31mred?"
    assert len(clean("container:" + "n" * 500)) == 200


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _netns_inode(pid: int, own: int) -> int:
    """The namespace inode of `pid` once it has left ours (unshare/ip exec are quick, but
    not instant)."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            ino = own
        if ino != own:
            return ino
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never entered its own network namespace")


def test_all_netns_names_namespaces_by_pod_and_container(tmp_path):
    require_root("network namespaces and their processes")
    name = f"cni-{uuid.uuid4()}"
    root = _root(tmp_path, name)
    own = os.stat("/proc/self/ns/net").st_ino
    procs: list[subprocess.Popen] = []
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        layouts = {"containerd": ["ip", "netns", "exec", name, "sleep", "600"],
                   "crio": ["unshare", "--net", "sleep", "600"],
                   "docker": ["unshare", "--net", "sleep", "600"],
                   "docker:unknown": ["unshare", "--net", "sleep", "600"],
                   "docker:host": ["unshare", "--net", "sleep", "600"]}
        inodes = {}
        for layout, cmd in layouts.items():
            p = _start(cmd)
            procs.append(p)
            inodes[layout] = _netns_inode(p.pid, own)
            _fake_cgroup(root, p.pid, layout)
        env = {"NETDIAG_HOST_ROOT": str(root)}
        report, _ = run_json("check", "--all-netns", env=env)
        rows = {r["inode"]: r for r in report["facts"]["namespaces"]}
        pod = rows[inodes["containerd"]]
        assert pod["netns"] == "pod:shop/web-7d4b9c6f5-x2k8p" and pod["name"] == name
        assert pod["container"]["pod_namespace"] == "shop"
        assert pod["container"]["runtime"] == "containerd"
        assert pod["container"]["id"] == SANDBOX  # the pod's sandbox, found by its netns path
        crio = rows[inodes["crio"]]
        assert crio["netns"] == "pod:cache/redis-0"
        assert crio["container"]["name"] == "redis" and crio["container"]["runtime"] == "cri-o"
        assert crio["holder_command"] == "sleep"
        docker = rows[inodes["docker"]]
        assert docker["netns"] == "container:billing-api-1"
        assert docker["container"]["runtime"] == "docker"
        assert rows[inodes["docker:unknown"]]["netns"] == "container:ffffffffffff"
        host = rows[inodes["docker:host"]]
        pid = procs[-1].pid
        assert host["netns"] == f"pid:{pid} (sleep)" and host["container"] is None
        assert rows[own]["netns"] == "default" and rows[own]["container"] is None
        labels = [r["netns"] for r in report["facts"]["namespaces"]]
        assert len(labels) == len(set(labels))
        # The same labels reach Prometheus (and the alert that names them).
        prom = run_netdiag("check", "--all-netns", "--format", "prometheus", env=env).stdout
        status = {s.labels["netns"] for f in text_string_to_metric_families(prom)
                  if f.name == "netdiag_status" for s in f.samples}
        assert {"pod:shop/web-7d4b9c6f5-x2k8p", "pod:cache/redis-0",
                "container:billing-api-1"} <= status
        # Without the runtime files: the holder process, never a wrong container.
        bare, _ = run_json("check", "--all-netns", env={"NETDIAG_HOST_ROOT": str(tmp_path)})
        rows = {r["inode"]: r for r in bare["facts"]["namespaces"]}
        assert rows[inodes["containerd"]]["netns"] == name
        assert rows[inodes["crio"]]["netns"].startswith("pid:")
        assert json.dumps(bare["facts"]).count("billing-api") == 0
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.parametrize("text", ["{", "[]", '{"annotations": "not a mapping"}'])
def test_damaged_state_files_are_ignored(tmp_path, text):
    from netdiag.containers import Labeller

    root = _root(tmp_path)
    path = root / ("run/containerd/io.containerd.runtime.v2.task/k8s.io/"
                   f"{SANDBOX}/config.json")
    path.write_text(text)
    _fake_cgroup(root, 21, "containerd")
    got = Labeller(str(root)).by_process(21)  # the app container's own bundle still counts
    assert got.label() == "pod:shop/web-7d4b9c6f5-x2k8p"
