"""Name network namespaces by what runs in them (--all-netns on container hosts), from what
the host already has, without talking to any cluster API:

- /proc/PID/cgroup of the processes in a namespace: the container id, which runtime made it
  (docker-ID.scope, cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope, or the cgroupfs
  layouts /docker/ID and /kubepods/.../podUID/ID), and the pod UID;
- the runtimes' state files, keyed by container id and by the namespace path they record:
  containerd's OCI bundles /run/containerd/io.containerd.runtime.v2.task/NS/ID/config.json
  (the CRI plugin annotates them with pod name, namespace and container name; the k8s.io
  namespace), CRI-O's /run/containers/storage/overlay-containers/ID/userdata/config.json
  (same, with its own annotation names) and /var/lib/containers/storage/overlay-containers/
  containers.json (CRI-O and podman names), Docker's /var/lib/docker/containers/ID/
  config.v2.json (name, labels, the sandbox key /var/run/docker/netns/KEY).

A pod's namespace is labelled "pod:NAMESPACE/NAME", a container's "container:NAME" (or its
short id when no name is known). Where nothing is known, the caller keeps its own label (the
/run/netns name, or the holder process). Every file is read from below an injectable root
(NETDIAG_HOST_ROOT, default /), so that netdiag in a container with the host's / mounted at
/host can read them, and so that tests can point it at recorded layouts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

MAX_STATE_BYTES = 4 << 20  # one state file
MAX_STATE_FILES = 20000
MAX_LABEL = 200
CONTAINERD_TASKS = "run/containerd/io.containerd.runtime.v2.task"
CRIO_CONTAINERS = "run/containers/storage/overlay-containers"
CONTAINERS_JSON = ("var/lib/containers/storage/overlay-containers/containers.json",
                   "run/containers/storage/overlay-containers/containers.json")
DOCKER_CONTAINERS = "var/lib/docker/containers"
NETNS_DIRS = ("/run/netns/", "/var/run/netns/")

# Container ids in cgroup paths, with the runtime each layout belongs to.
_CGROUP_IDS = (
    (re.compile(r"docker-([0-9a-f]{64})\.scope"), "docker"),
    (re.compile(r"/docker/([0-9a-f]{64})(?:/|$)"), "docker"),
    (re.compile(r"cri-containerd-([0-9a-f]{64})\.scope"), "containerd"),
    (re.compile(r"crio-([0-9a-f]{64})\.scope"), "cri-o"),
    (re.compile(r"/crio/([0-9a-f]{64})(?:/|$)"), "cri-o"),
    (re.compile(r"libpod-([0-9a-f]{64})\.scope"), "podman"),
    (re.compile(r"nerdctl-([0-9a-f]{64})\.scope"), "containerd"),
    (re.compile(r"/kubepods[^\s]*/pod[0-9a-f_-]{36}/([0-9a-f]{64})(?:/|$)"), None),
)
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_]"
                      r"[0-9a-f]{12})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Container:
    runtime: str | None
    id: str
    name: str | None = None
    pod_name: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    sandbox: bool = False  # the pod's sandbox (pause) container, or a pod-level record

    def label(self) -> str:
        if self.pod_name:
            ns = f"{self.pod_namespace}/" if self.pod_namespace else ""
            return clean(f"pod:{ns}{self.pod_name}")
        if self.name:
            return clean(f"container:{self.name}")
        return f"container:{self.id[:12]}"

    def as_json(self) -> dict:
        return {"runtime": self.runtime, "id": self.id, "name": self.name,
                "pod_name": self.pod_name, "pod_namespace": self.pod_namespace,
                "pod_uid": self.pod_uid}


def clean(text: str) -> str:
    """A label from a file anyone with a container could write: no control characters,
    bounded length."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def host_root() -> str:
    return os.environ.get("NETDIAG_HOST_ROOT") or "/"


def cgroup_container(text: str) -> tuple[str | None, str | None, str | None]:
    """(container id, runtime, pod UID) from the text of /proc/PID/cgroup."""
    cid = runtime = None
    for pattern, rt in _CGROUP_IDS:
        m = pattern.search(text)
        if m:
            cid, runtime = m.group(1), rt
            break
    uid = _POD_UID.search(text)
    return cid, runtime, uid.group(1).replace("_", "-") if uid else None


@dataclass
class _Record:
    container: Container
    netns: str | None = None  # the namespace path the runtime recorded


@dataclass
class StateIndex:
    """What the runtimes recorded, by container id and by namespace path."""

    by_id: dict[str, _Record] = field(default_factory=dict)
    by_netns: dict[str, list[_Record]] = field(default_factory=dict)

    def add(self, rec: _Record) -> None:
        known = self.by_id.get(rec.container.id)
        if known is not None:  # two sources: keep what either knows
            for attr in ("name", "pod_name", "pod_namespace", "pod_uid"):
                if getattr(known.container, attr) is None:
                    setattr(known.container, attr, getattr(rec.container, attr))
            known.netns = known.netns or rec.netns
            rec = known
        self.by_id[rec.container.id] = rec
        if rec.netns and rec not in self.by_netns.get(rec.netns, []):
            self.by_netns.setdefault(rec.netns, []).append(rec)


def _read_json(path: str):
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_STATE_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_STATE_BYTES:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))[:MAX_STATE_FILES]
    except OSError:
        return []


def _oci_netns(spec: dict) -> str | None:
    linux = spec.get("linux") if isinstance(spec, dict) else None
    for ns in (linux or {}).get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network":
            return _text(ns.get("path"))
    return None


def _from_containerd(cid: str, spec: dict) -> _Record:
    ann = spec.get("annotations") if isinstance(spec.get("annotations"), dict) else {}
    kind = ann.get("io.kubernetes.cri.container-type")
    c = Container("containerd", cid,
                  name=_text(ann.get("io.kubernetes.cri.container-name"))
                  or _text(ann.get("nerdctl/name")),
                  pod_name=_text(ann.get("io.kubernetes.cri.sandbox-name")),
                  pod_namespace=_text(ann.get("io.kubernetes.cri.sandbox-namespace")),
                  pod_uid=_text(ann.get("io.kubernetes.cri.sandbox-uid")),
                  sandbox=kind == "sandbox")
    return _Record(c, _oci_netns(spec))


def _from_crio(cid: str, spec: dict) -> _Record:
    ann = spec.get("annotations") if isinstance(spec.get("annotations"), dict) else {}
    kind = ann.get("io.kubernetes.cri-o.ContainerType")
    c = Container("cri-o", cid, name=_text(ann.get("io.kubernetes.container.name")),
                  pod_name=_text(ann.get("io.kubernetes.pod.name")),
                  pod_namespace=_text(ann.get("io.kubernetes.pod.namespace")),
                  pod_uid=_text(ann.get("io.kubernetes.pod.uid")),
                  sandbox=kind == "sandbox")
    return _Record(c, _oci_netns(spec))


def _from_docker(cid: str, cfg: dict) -> _Record:
    conf = cfg.get("Config") if isinstance(cfg.get("Config"), dict) else {}
    labels = conf.get("Labels") if isinstance(conf.get("Labels"), dict) else {}
    name = _text(cfg.get("Name"))
    kind = labels.get("io.kubernetes.docker.type")  # dockershim / cri-dockerd
    c = Container("docker", cid, name=name.lstrip("/") if name else None,
                  pod_name=_text(labels.get("io.kubernetes.pod.name")),
                  pod_namespace=_text(labels.get("io.kubernetes.pod.namespace")),
                  pod_uid=_text(labels.get("io.kubernetes.pod.uid")),
                  sandbox=kind == "podsandbox")
    settings = cfg.get("NetworkSettings") if isinstance(cfg.get("NetworkSettings"), dict) \
        else {}
    return _Record(c, _text(settings.get("SandboxKey")))


def read_state(root: str) -> StateIndex:
    """Every container the runtimes under `root` recorded (missing runtimes: nothing)."""
    index = StateIndex()
    tasks = os.path.join(root, CONTAINERD_TASKS)
    for namespace in _listdir(tasks):
        for cid in _listdir(os.path.join(tasks, namespace)):
            spec = _read_json(os.path.join(tasks, namespace, cid, "config.json"))
            if isinstance(spec, dict):
                index.add(_from_containerd(cid, spec))
    crio = os.path.join(root, CRIO_CONTAINERS)
    for cid in _listdir(crio):
        spec = _read_json(os.path.join(crio, cid, "userdata", "config.json"))
        if isinstance(spec, dict):
            index.add(_from_crio(cid, spec))
    for rel in CONTAINERS_JSON:
        listing = _read_json(os.path.join(root, rel))
        for entry in listing if isinstance(listing, list) else []:
            if not isinstance(entry, dict) or not _text(entry.get("id")):
                continue
            meta = entry.get("metadata")
            try:
                meta = json.loads(meta) if isinstance(meta, str) else {}
            except ValueError:
                meta = {}
            meta = meta if isinstance(meta, dict) else {}
            names = entry.get("names") if isinstance(entry.get("names"), list) else []
            name = _text(meta.get("container-name")) or (_text(names[0]) if names else None)
            index.add(_Record(Container(None, entry["id"], name=name,
                                        pod_name=_text(meta.get("pod-name")))))
    docker = os.path.join(root, DOCKER_CONTAINERS)
    for cid in _listdir(docker):
        cfg = _read_json(os.path.join(docker, cid, "config.v2.json"))
        if isinstance(cfg, dict):
            index.add(_from_docker(cid, cfg))
    return index


class Labeller:
    """Finds the container behind a namespace: first by the namespace path a runtime
    recorded (named namespaces: /run/netns/cni-...), then by the cgroups of its processes."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or host_root()
        self._index: StateIndex | None = None

    @property
    def index(self) -> StateIndex:
        if self._index is None:
            self._index = read_state(self.root)
        return self._index

    def by_name(self, name: str, inode: int) -> Container | None:
        """A namespace named under /run/netns (containerd and CRI-O pin pods' there)."""
        best = None
        for path, recs in self.index.by_netns.items():
            if not any(path == d + name for d in NETNS_DIRS):
                continue
            for rec in recs:
                if best is None or (rec.container.sandbox and not best.sandbox):
                    best = rec.container
        return best

    def by_inode(self, inode: int, dev: int) -> Container | None:
        """A namespace file a runtime recorded elsewhere (Docker: /var/run/docker/netns)."""
        for path, recs in self.index.by_netns.items():
            if any(path.startswith(d) for d in NETNS_DIRS):
                continue
            try:
                st = os.stat(os.path.join(self.root, path.lstrip("/")))
            except OSError:
                continue
            if st.st_ino == inode and st.st_dev == dev:
                return recs[0].container
        return None

    def by_process(self, pid: int) -> Container | None:
        try:
            with open(os.path.join(self.root, "proc", str(pid), "cgroup"), "rb") as fh:
                text = fh.read(65536).decode("utf-8", "replace")
        except OSError:
            return None
        cid, runtime, uid = cgroup_container(text)
        if cid is None:
            return None
        rec = self.index.by_id.get(cid)
        if rec is None:
            return Container(runtime, cid, pod_uid=uid)
        c = rec.container
        if c.runtime is None:
            c.runtime = runtime
        c.pod_uid = c.pod_uid or uid
        return c
