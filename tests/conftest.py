"""Shared test fixtures: recorded host snapshots and throwaway network namespaces."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
HOSTS = FIXTURES / "hosts"
SOCKLOAD = HERE / "helpers" / "sockload.py"
REPO = HERE.parent


def require_root(what: str) -> None:
    """Skip (with the reason) when not root; fail instead under NETDIAG_REQUIRE_ROOT=1."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("ip") is None:
        missing.append("the `ip` command (iproute2)")
    if not missing:
        return
    reason = f"{what} needs {' and '.join(missing)}"
    if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
        pytest.fail(f"NETDIAG_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


SCHEMA_DIR = REPO / "docs" / "schema"


@functools.cache
def _validators() -> tuple:
    """The published schema (with the schemas it references, by file name) as validators:
    the whole document, and each kind of document alone (for readable errors)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    docs = {p.name: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.schema.json")}
    for doc in docs.values():
        Draft202012Validator.check_schema(doc)
    registry = Registry().with_resources(
        (name, Resource.from_contents(doc, default_specification=DRAFT202012))
        for name, doc in docs.items())
    root = docs["netdiag.schema.json"]
    whole = Draft202012Validator(root, registry=registry)
    kinds = {kind: Draft202012Validator({"$ref": f"netdiag.schema.json#/$defs/{kind}"},
                                        registry=registry)
             for kind in ("report", "probe_list", "history", "explain_finding",
                          "explain_topic")}
    return whole, kinds


def _kind(doc: object) -> str:
    if isinstance(doc, dict):
        for key, kind in (("probes", "probe_list"), ("runs", "history"), ("findings", "report"),
                          ("background", "explain_topic"), ("id", "explain_finding"),
                          ("symptoms", "why_list"), ("concept", "explain_concept"),
                          ("cause", "explain_cause"), ("concepts", "explain_list")):
            if key in doc:
                return kind
    return "report"


def validate_json(doc: object) -> None:
    """Fail unless `doc` is valid under docs/schema/netdiag.schema.json."""
    whole, kinds = _validators()
    if whole.is_valid(doc):
        return
    errors = sorted(kinds[_kind(doc)].iter_errors(doc), key=lambda e: list(e.absolute_path))
    lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '(document)'}: {e.message[:300]}"
             for e in errors[:10]] or ["valid as one kind of document only if ambiguous: "
                                       "check the oneOf of the root schema"]
    raise AssertionError("netdiag JSON does not match docs/schema/netdiag.schema.json:\n  " +
                         "\n  ".join(lines))


def load_json(text: str) -> dict:
    """Parse netdiag's JSON output and validate it against the published schema."""
    doc = json.loads(text)
    validate_json(doc)
    return doc


def _asks_json(args: tuple[str, ...]) -> bool:
    """True when the command prints JSON on stdout (not into --output FILE)."""
    if "--output" in args or "-o" in args:
        return False
    pairs = zip(args, args[1:])
    return "--json" in args or any(a in ("--format", "-f") and b == "json" for a, b in pairs)


def run_netdiag(*args: str, netns: str | None = None, check_rc=None, user: str | None = None,
                env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (so setns and exit codes are exercised for real).
    JSON on stdout is validated against the published schema, whatever the test does next."""
    cmd = [sys.executable, "-m", "netdiag", *args]
    if netns is not None:
        cmd += ["--netns", netns]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    full_env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="100")
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd="/")
    if check_rc is not None:
        assert proc.returncode in check_rc, (proc.returncode, proc.stdout[-2000:],
                                              proc.stderr[-2000:])
    if _asks_json(args) and proc.stdout.strip():
        load_json(proc.stdout)
    return proc


def run_json(*args: str, netns: str | None = None, **kw) -> tuple[dict, int]:
    proc = run_netdiag(*args, "--format", "json", netns=netns, **kw)
    assert "Traceback" not in proc.stderr, proc.stderr
    return load_json(proc.stdout), proc.returncode


def finding(report: dict, fid: str) -> dict | None:
    return next((f for f in report["findings"] if f["id"] == fid), None)


def judge_symptom(symptom: str, facts, scope=None, extra=None) -> dict:
    """`netdiag why SYMPTOM` on facts, without the CLI: every rule's findings (plus `extra`)
    judged for the symptom's causes, {cause id: verdict}."""
    from netdiag.diagnose import judge
    from netdiag.diagnose.judge import Scope
    from netdiag.diagnose.symptoms import find
    from netdiag.rules import TOPICS, evaluate

    findings = evaluate(facts, list(TOPICS)).findings + list(extra or [])
    return {v.cause.id: v for v in judge.diagnose(find(symptom), facts, findings,
                                                   scope or Scope())}


def host_wide(f: dict) -> bool:
    """A finding about the host, not the namespace: per-CPU softirq counters, processes and
    their fd limits, global TCP memory. Other work on this machine may set them off."""
    from netdiag.pipeline import HOST_WIDE_IDS, HOST_WIDE_TOPICS

    return f["topic"] in HOST_WIDE_TOPICS or f["id"] in HOST_WIDE_IDS


class NetNS:
    """A fresh network namespace with loopback up; deleted (with its processes) on exit."""

    def __init__(self) -> None:
        # NETDIAG_TEST_NETNS_PREFIX: a prefix of one's own, for hosts where several people
        # run tests and each must recognise (and clean up) their namespaces.
        prefix = os.environ.get("NETDIAG_TEST_NETNS_PREFIX", "nd-")
        self.name = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> NetNS:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.exec("ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Every process still in the namespace too: a child of a load we started (timeout's
        # redis-benchmark, a shell's children) outlives its killed parent, keeps the
        # namespace alive after `ip netns del` and loads the machine long after the test.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                                 text=True).stdout.split()
            pids = [int(x) for x in out if x.isdigit()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], check=check,
                              capture_output=True, text=True, timeout=60)

    def sysctl(self, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        self.exec("sh", "-c", f"echo '{value}' > {path}")

    def spawn_load(self, mode: str, *args: str, ready_timeout: float = 60) -> tuple[
            subprocess.Popen, str]:
        """Start sockload.py in the namespace and wait for its READY line."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, str(SOCKLOAD), mode, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        deadline = time.monotonic() + ready_timeout
        line = ""
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if line.startswith("READY") or not line:
                break
        if not line.startswith("READY"):
            err = p.stderr.read() if p.poll() is not None else ""
            raise AssertionError(f"sockload {mode} did not get ready: {line!r} {err}")
        return p, line.strip()

    def ss_counts(self, *extra: str) -> dict[str, int]:
        out = self.exec("ss", "-tanH", *extra).stdout
        counts: dict[str, int] = {}
        for line in out.splitlines():
            if line.strip():
                state = line.split()[0]
                counts[state] = counts.get(state, 0) + 1
        return counts


@pytest.fixture
def netns():
    require_root("a network-namespace scenario")
    with NetNS() as ns:
        yield ns


@pytest.fixture
def host_root():
    def get(name: str) -> Path:
        path = HOSTS / name
        assert path.is_dir(), f"missing fixture {path}"
        return path

    return get
