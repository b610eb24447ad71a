"""`netdiag serve` as a fleet scrapes it: TLS and basic auth from an exporter-toolkit web config
(checked against promtool, scraped by curl, Python ssl and a real Prometheus server), slow and
misbehaving clients, the descriptor limit, SIGTERM with a scrape in flight, IPv6."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO

PASSWORD = "s3cret pass"


def _free_port(family: int = socket.AF_INET) -> int:
    with socket.socket(family) as s:
        s.bind(("::" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed; `make test` installs it (Makefile SYSTEM_TOOLS)"
        if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class Serve:
    """`netdiag serve` in a subprocess; its stderr lines are collected as they come."""

    def __init__(self, *args: str, listen: str | None = None) -> None:
        self.port = _free_port()
        self.listen = listen or f"127.0.0.1:{self.port}"
        if listen:
            self.port = int(listen.rsplit(":", 1)[1])
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netdiag", "serve", "--listen", self.listen, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env, cwd="/")
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_log(self, pattern: str, timeout: float = 30) -> str:
        for line in self.seen:
            if re.search(pattern, line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no log line matching {pattern!r}; got {self.seen}")

    def log(self) -> list[str]:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.seen
            if line is None:
                return self.seen
            self.seen.append(line)

    def started(self) -> Serve:
        self.wait_log("listening on")
        return self

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError("netdiag serve did not stop within 30 s of SIGTERM") from None

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def fetch(host: str, port: int, path: str = "/metrics", *, context=None, auth=None,
          headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    cls = http.client.HTTPSConnection if context is not None else http.client.HTTPConnection
    kw = {"context": context} if context is not None else {}
    conn = cls(host, port, timeout=timeout, **kw)
    hdrs = dict(headers or {})
    if auth is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def families(body: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


# ---- certificates and web configs ----------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([_tool("openssl"), *args], cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def _issue(d: Path, name: str, ca: str, sans: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={sans}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
             f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA; a server certificate for 127.0.0.1, ::1 and localhost; two client certificates
    of that CA (SAN prometheus, SAN intruder) and one of another CA."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "otherca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj",
                 f"/CN=netdiag test {ca}", "-days", "2", cwd=d)
    _issue(d, "server", "ca", "IP:127.0.0.1,IP:::1,DNS:localhost")
    _issue(d, "client", "ca", "DNS:prometheus")
    _issue(d, "intruder", "ca", "DNS:intruder")
    _issue(d, "stranger", "otherca", "DNS:prometheus")
    return d


def _hash(password: str) -> str:
    """As `htpasswd -nBC 4` writes it ($2y$; low cost to keep the test quick)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode().replace(
        "$2b$", "$2y$", 1)


def _client_ctx(pki: Path, cert: str | None = None, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


def _promtool_verdict(path: Path) -> tuple[bool, str]:
    out = subprocess.run([_tool("promtool"), "check", "web-config", str(path)],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0, out.stdout + out.stderr


# ---- web configuration: the same files as the Prometheus ecosystem ---------------------------

GOOD = {
    "tls_and_users": "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                     "basic_auth_users:\n  prom: {hash}\n",
    "client_certs": "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                    "  client_auth_type: RequireAndVerifyClientCert\n"
                    "  client_ca_file: ca.pem\n  min_version: TLS13\n"
                    "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
                    "  curve_preferences: [CurveP256]\n"
                    "  prefer_server_cipher_suites: false\n"
                    "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    "users_only": "basic_auth_users:\n  prom: {hash}\n",
    "empty": "",
}
BAD = {
    "unknown_top_key": ("tls_config:\n  cert_file: server.pem\n", "unknown key 'tls_config'"),
    "unknown_tls_key": ("tls_server_config:\n  certfile: server.pem\n  key_file: server.key\n",
                        "unknown key 'certfile'"),
    "no_key": ("tls_server_config:\n  cert_file: server.pem\n", "missing one of key"),
    "missing_cert_file": ("tls_server_config:\n  cert_file: nothere.pem\n"
                          "  key_file: server.key\n", "nothere.pem"),
    "ca_without_policy": ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key"
                          "\n  client_ca_file: ca.pem\n", "without a Client Auth Policy"),
    "plaintext_password": ("basic_auth_users:\n  prom: s3cret\n", "not a bcrypt hash"),
    "bad_version": ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                    "  min_version: TLS14\n", "unknown TLS version"),
    "duplicate_key": ("basic_auth_users:\n  prom: {hash}\n  prom: {hash}\n", "duplicate key"),
    "not_yaml": ("tls_server_config: [\n", "not valid YAML"),
    "bad_header": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                   "X-Frame-Options"),
    "unknown_cipher": ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                       "  cipher_suites: [TLS_FAKE_WITH_NOTHING]\n", "unknown cipher"),
    "bad_auth_type": ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                      "  client_auth_type: Sometimes\n", "client_auth_type"),
}
# Valid for the toolkit, refused by netdiag with the reason (Python's ssl cannot do them).
NETDIAG_REFUSES = {
    "unverified_client_cert": ("tls_server_config:\n  cert_file: server.pem\n"
                               "  key_file: server.key\n  client_auth_type: RequestClientCert\n",
                               "without verifying it"),
    "two_curves": ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                   "  curve_preferences: [X25519, CurveP256]\n", "one curve"),
}


def _write(pki: Path, name: str, text: str) -> Path:
    path = pki / f"web-{name}.yml"
    path.write_text(text.replace("{hash}", _hash(PASSWORD)))
    return path


def test_web_config_files_are_judged_like_promtool_judges_them(pki):
    from netdiag.webconfig import WebConfigError, load, ssl_context

    for name, text in GOOD.items():
        path = _write(pki, name, text)
        ok, out = _promtool_verdict(path)
        assert ok, (name, out)
        ssl_context(load(str(path)))  # netdiag takes it too
    for name, (text, phrase) in BAD.items():
        path = _write(pki, name, text)
        ok, out = _promtool_verdict(path)
        assert not ok, (name, "promtool accepted it", out)
        with pytest.raises(WebConfigError) as exc:
            ssl_context(load(str(path)))
        assert phrase in str(exc.value), (name, str(exc.value))
        assert "\n" not in str(exc.value)
    for name, (text, phrase) in NETDIAG_REFUSES.items():
        path = _write(pki, name, text)
        assert _promtool_verdict(path)[0], name
        with pytest.raises(WebConfigError) as exc:
            ssl_context(load(str(path)))
        assert phrase in str(exc.value)
    # The CLI: one line on stderr, exit 3, nothing listening.
    bad = _write(pki, "cli", BAD["unknown_tls_key"][0])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "netdiag", "serve", "--listen",
                           f"127.0.0.1:{_free_port()}", "--web-config", str(bad)],
                          capture_output=True, text=True, timeout=60, env=env, cwd="/")
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "unknown key 'certfile'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_contrib_web_config_works_for_promtool_and_netdiag(pki, tmp_path):
    from netdiag.webconfig import Authenticator, load, ssl_context

    text = (REPO / "contrib" / "prometheus" / "netdiag-web-config.yml").read_text()
    for name, ours in (("netdiag.crt", "server.pem"), ("netdiag.key", "server.key"),
                       ("prometheus-ca.crt", "ca.pem")):
        text = text.replace(f"/etc/netdiag/tls/{name}", str(pki / ours))
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    ok, out = _promtool_verdict(path)
    assert ok, out
    cfg = load(str(path))
    assert ssl_context(cfg).verify_mode == ssl.CERT_REQUIRED
    header = "Basic " + base64.b64encode(b"prometheus:change me").decode()
    assert Authenticator().check(cfg.users, header)


def test_basic_auth_header_parsing_and_cache():
    from netdiag.webconfig import Authenticator, duration, parse_basic

    users = {"prom": _hash(PASSWORD).encode()}
    auth = Authenticator()
    good = "Basic " + base64.b64encode(f"prom:{PASSWORD}".encode()).decode()
    assert auth.check(users, good) and auth.check(users, good)  # second one from the cache
    assert len(auth.cache) == 1
    assert not auth.check(users, "Basic " + base64.b64encode(b"prom:wrong").decode())
    assert not auth.check(users, "Basic " + base64.b64encode(
        f"other:{PASSWORD}".encode()).decode())
    assert not auth.check(users, None) and not auth.check(users, "Bearer abc")
    assert not auth.check(users, "Basic !!!not-base64")
    assert parse_basic("basic " + base64.b64encode(b"a:b:c").decode()) == ("a", b"b:c")
    assert duration("x", "1m30s") == 90 and duration("x", "250ms") == 0.25
    assert duration("x", 1_000_000_000) == 1.0


def test_tls_and_basic_auth_with_curl_and_python_ssl(pki):
    config = _write(pki, "serve-tls", GOOD["tls_and_users"])
    with Serve("--web-config", str(config), "--min-interval", "600") as srv:
        line = srv.started().wait_log("listening on")
        assert f"https://127.0.0.1:{srv.port}/metrics" in line and "basic auth" in line
        curl = _tool("curl")
        url = f"https://127.0.0.1:{srv.port}/metrics"

        def run_curl(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([curl, "-sS", "--cacert", str(pki / "ca.pem"), "-o",
                                   "/dev/stdout", "-w", "\n%{http_code}", *args, url],
                                  capture_output=True, text=True, timeout=90)

        ok = run_curl("-u", f"prom:{PASSWORD}")
        body, code = ok.stdout.rsplit("\n", 1)
        assert code == "200", ok.stderr
        assert families(body.encode())["netdiag_status"].samples[0].value in (0, 1, 2)
        for creds in ("prom:wrong", f"nobody:{PASSWORD}", "prom:"):
            assert run_curl("-u", creds).stdout.rsplit("\n", 1)[1] == "401", creds
        status, headers, _ = fetch("127.0.0.1", srv.port, context=_client_ctx(pki))
        assert status == 401 and headers["www-authenticate"] == "Basic"
        # Python's ssl, TLS 1.2 and 1.3.
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = _client_ctx(pki, minimum_version=version, maximum_version=version)
            status, headers, body = fetch("127.0.0.1", srv.port, context=ctx,
                                          auth=("prom", PASSWORD))
            assert status == 200 and b"netdiag_finding_severity" in body, version
        # Plain HTTP on the TLS port is not served.
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            status, _, _ = fetch("127.0.0.1", srv.port, timeout=15)
            assert status != 200
        # A new password in the file takes effect without a restart.
        config.write_text(GOOD["tls_and_users"].replace("{hash}", _hash("rotated")))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if fetch("127.0.0.1", srv.port, context=_client_ctx(pki),
                     auth=("prom", "rotated"))[0] == 200:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the rotated password was never accepted")
        assert fetch("127.0.0.1", srv.port, context=_client_ctx(pki),
                     auth=("prom", PASSWORD))[0] == 401
        srv.wait_log("reloaded")
        assert srv.stop() == 0
    log = srv.log()
    assert not any("Traceback" in line for line in log)
    assert any("authentication failed" in line for line in log)


def test_client_certificates_are_verified(pki):
    text = ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
            "  client_allowed_sans: [prometheus]\n"
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    config = _write(pki, "serve-mtls", text)
    with Serve("--web-config", str(config), "--min-interval", "600") as srv:
        srv.started()
        status, headers, body = fetch("127.0.0.1", srv.port, context=_client_ctx(pki, "client"))
        assert status == 200 and headers["x-frame-options"] == "deny"
        for cert in (None, "stranger", "intruder"):  # none, another CA, a SAN not allowed
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException,
                                OSError)):
                fetch("127.0.0.1", srv.port, context=_client_ctx(pki, cert), timeout=15)
        srv.wait_log("client_allowed_sans")
        srv.wait_log("TLS handshake with 127.0.0.1:[0-9]+ failed")
    assert not any("Traceback" in line for line in srv.log())


def test_a_real_prometheus_scrapes_over_tls_with_auth(pki, tmp_path):
    prometheus = _tool("prometheus")
    text = GOOD["tls_and_users"].replace(
        "  key_file: server.key\n", "  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n")
    config = _write(pki, "serve-prom", text)
    with Serve("--web-config", str(config), "--min-interval", "600") as srv:
        srv.started()
        # Warm the cache so that the first scrape is not the one paying for the check.
        assert fetch("127.0.0.1", srv.port, context=_client_ctx(pki, "client"),
                     auth=("prom", PASSWORD))[0] == 200
        port = _free_port()
        (tmp_path / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{
                "job_name": "netdiag", "scheme": "https",
                "tls_config": {"ca_file": str(pki / "ca.pem"),
                               "cert_file": str(pki / "client.pem"),
                               "key_file": str(pki / "client.key"),
                               "server_name": "localhost"},
                "basic_auth": {"username": "prom", "password": PASSWORD},
                "static_configs": [{"targets": [f"127.0.0.1:{srv.port}"]}]}]}))
        prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            api = f"http://127.0.0.1:{port}/api/v1"
            target, deadline = None, time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{api}/targets", timeout=5) as resp:
                        active = json.load(resp)["data"]["activeTargets"]  # not netdiag output
                    target = active[0] if active else None
                    if target and target["health"] == "up":
                        break
                except OSError:
                    pass
                time.sleep(0.3)
            assert target is not None and target["health"] == "up", target
            with urllib.request.urlopen(f"{api}/query?query=netdiag_status", timeout=10) as r:
                result = json.load(r)["data"]["result"]  # not netdiag output
            assert result and result[0]["metric"]["job"] == "netdiag"
        finally:
            prom.terminate()
            prom.wait(timeout=30)
    assert not any("Traceback" in line for line in srv.log())


def test_openmetrics_negotiation_and_gzip():
    with Serve("--min-interval", "600") as srv:
        srv.started()
        status, headers, body = fetch("127.0.0.1", srv.port, headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;"
                      "q=0.5,*/*;q=0.1"})
        assert status == 200 and headers["content-type"].startswith(
            "application/openmetrics-text; version=1.0.0")
        fams = {f.name: f for f in om_families(body.decode())}
        assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
        assert "netdiag_status" in fams and fams["netdiag_exporter_runs"].type == "counter"
        status, headers, body = fetch("127.0.0.1", srv.port)
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        plain = families(body)
        assert set(plain) >= {"netdiag_status", "netdiag_finding_severity",
                              "netdiag_exporter_last_run_success"}
        import gzip

        status, headers, zipped = fetch("127.0.0.1", srv.port,
                                        headers={"Accept-Encoding": "gzip"})
        assert headers.get("content-encoding") == "gzip"
        assert "netdiag_status" in families(gzip.decompress(zipped))
        assert fetch("127.0.0.1", srv.port, "/nothing")[0] == 404


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing the connection (within `seconds`)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def test_slow_clients_cannot_starve_a_scrape():
    cap, read_timeout = 32, 2.0
    with Serve("--max-connections", str(cap), "--read-timeout", str(read_timeout),
               "--min-interval", "600") as srv:
        srv.started()
        assert fetch("127.0.0.1", srv.port)[0] == 200  # the check ran once; cached now
        # A partial request is answered 408 and closed after --read-timeout, not held.
        partial = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        partial.sendall(b"GET /metr")
        start = time.monotonic()
        answer = _closed_within(partial, read_timeout + 20)
        assert time.monotonic() - start >= read_timeout * 0.9
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        partial.close()
        # Hundreds of idle connections and another partial request...
        idle = []
        try:
            for _ in range(300):
                idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            idle[-1].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            # ...and a normal scrape still answers within a scrape timeout.
            status, _, body = fetch("127.0.0.1", srv.port, timeout=10)
            assert status == 200 and b"netdiag_status" in body
            pid = srv.proc.pid
            assert _threads(pid) <= 8
            assert len(os.listdir(f"/proc/{pid}/fd")) <= cap + 64 + 32
            assert _rss_kib(pid) < 200 * 1024
            fams = families(fetch("127.0.0.1", srv.port, timeout=10)[2])
            assert fams["netdiag_exporter_connections"].samples[0].value <= cap
            dropped = {s.labels["reason"]: s.value
                       for s in fams["netdiag_exporter_connections_dropped"].samples}
            assert dropped["evicted"] > 0
            # Every idle connection is closed by the server within a bound.
            deadline = time.monotonic() + read_timeout + 30
            for s in idle:
                _closed_within(s, max(0.1, deadline - time.monotonic()))
            assert time.monotonic() < deadline
        finally:
            for s in idle:
                s.close()
    log = srv.log()
    assert not any("Traceback" in line for line in log)
    # Rate-limited: hundreds of evictions, a handful of lines.
    assert 1 <= sum("to make room" in line for line in log) <= 10


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def test_limit_refusal_client_reset_and_sigterm_mid_scrape():
    with Serve("--max-connections", "2", "--interval", "30", "--timeout", "60",
               "--min-interval", "0", "--read-timeout", "5") as srv:
        srv.started()
        waiting = []
        for _ in range(2):  # two scrapes wait for the (30 s) run
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            waiting.append(s)
        deadline = time.monotonic() + 30
        while not _children(srv.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        [child] = _children(srv.proc.pid)
        # Every slot has a request in progress: a third client is refused at once.
        third = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        third.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_within(third, 10).startswith(b"HTTP/1.1 503 ")
        srv.wait_log("refused 127.0.0.1:[0-9]+: 2 connections open")
        # A client resetting while it waits: one log line, no traceback.
        reset = waiting.pop()
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        reset.close()
        srv.wait_log("went away before its response was complete")
        # SIGTERM mid-scrape: exit 0, the check and its process group gone.
        assert os.getpgid(child) == child
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=30) == 0
        assert not Path(f"/proc/{child}").exists() or _group_members(child) == []
        assert _group_members(child) == []
        answer = _closed_within(waiting[0], 10)  # answered or closed, never left hanging
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 ")
        waiting[0].close()
    log = srv.log()
    assert any("SIGTERM received: stopping" in line for line in log)
    assert sum("went away" in line for line in log) == 1
    assert not any("Traceback" in line for line in log)


def test_descriptor_exhaustion_backs_off_and_recovers():
    with Serve("--max-connections", "500", "--min-interval", "600") as srv:
        srv.started()
        assert fetch("127.0.0.1", srv.port)[0] == 200
        pid = srv.proc.pid
        used = len(os.listdir(f"/proc/{pid}/fd"))
        limit = used + 12
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
        before = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                for _ in range(60)]
        try:
            srv.wait_log("accept: Too many open files")
            status, _, body = fetch("127.0.0.1", srv.port, timeout=30)
            assert status == 200
            fams = families(body)
            errors = fams["netdiag_exporter_accept_errors"].samples[0].value
            assert 1 <= errors <= 500  # backed off; a busy loop counts in the hundred thousands
            after = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            cpu = (int(after[11]) + int(after[12]) - int(before[11]) - int(before[12])) / ticks
            assert cpu < 5.0
        finally:
            for s in held:
                s.close()
    assert not any("Traceback" in line for line in srv.log())


def test_ipv6_and_dual_stack_listen():
    port = _free_port(socket.AF_INET6)
    with Serve("--min-interval", "600", listen=f"[::1]:{port}") as srv:
        line = srv.started().wait_log("listening on")
        assert f"http://[::1]:{port}/metrics" in line
        assert fetch("::1", port)[0] == 200
        assert not any("warning" in line for line in srv.log())
    port = _free_port(socket.AF_INET6)
    with Serve("--min-interval", "600", listen=f"[::]:{port}") as srv:
        srv.started()
        warning = srv.wait_log("warning")
        assert "without TLS and without authentication" in warning
        assert fetch("::1", port)[0] == 200 and fetch("127.0.0.1", port)[0] == 200
