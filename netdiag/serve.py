"""`netdiag serve`: a Prometheus exporter. Each scrape of /metrics runs `netdiag check
--format prometheus` in a child process (bounded by --timeout, so a stuck collector cannot
hang the exporter), cached for --min-interval seconds. A failed or timed-out run serves the
last good output with netdiag_exporter_last_run_success 0."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Exporter:
    def __init__(self, args: list[str], min_interval: float, timeout: float) -> None:
        self.args = args
        self.min_interval = min_interval
        self.timeout = timeout
        self.lock = threading.Lock()
        self.body = ""
        self.at = 0.0
        self.success = 0
        self.duration = 0.0
        self.runs = 0

    def metrics(self) -> str:
        with self.lock:  # one run at a time; concurrent scrapes share its result
            if time.monotonic() - self.at >= self.min_interval or not self.body:
                self._run()
            return self.body + self._own()

    def _run(self) -> None:
        start = time.monotonic()
        cmd = [sys.executable, "-m", "netdiag", "check", "--format", "prometheus", *self.args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
            ok = proc.returncode in (0, 1, 2) and proc.stdout.startswith("# HELP")
            if ok:
                self.body = proc.stdout
            else:
                sys.stderr.write(f"netdiag serve: check failed ({proc.returncode}): "
                                 f"{proc.stderr.strip()[:300]}\n")
        except subprocess.TimeoutExpired:
            ok = False
            sys.stderr.write(f"netdiag serve: check exceeded {self.timeout:g} s\n")
        self.success = 1 if ok else 0
        self.duration = time.monotonic() - start
        self.at = time.monotonic()
        self.runs += 1

    def _own(self) -> str:
        return (
            "# HELP netdiag_exporter_last_run_success 1 if the last check run succeeded.\n"
            "# TYPE netdiag_exporter_last_run_success gauge\n"
            f"netdiag_exporter_last_run_success {self.success}\n"
            "# HELP netdiag_exporter_run_duration_seconds Duration of the last check run.\n"
            "# TYPE netdiag_exporter_run_duration_seconds gauge\n"
            f"netdiag_exporter_run_duration_seconds {self.duration:.3f}\n"
            "# HELP netdiag_exporter_runs_total Check runs since the exporter started.\n"
            "# TYPE netdiag_exporter_runs_total counter\n"
            f"netdiag_exporter_runs_total {self.runs}\n")


def serve(host: str, port: int, exporter: Exporter, ready=None) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.split("?")[0] == "/metrics":
                body = exporter.metrics().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
            elif self.path == "/":
                body = b"netdiag exporter: see /metrics\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
            else:
                body = b"not found\n"
                self.send_response(404)
                self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            pass  # scrapes every 15 s would flood the journal

    httpd = ThreadingHTTPServer((host, port), Handler)
    sys.stderr.write(f"netdiag serve: listening on http://{host}:{httpd.server_address[1]}"
                     "/metrics\n")
    sys.stderr.flush()
    if ready is not None:
        ready(httpd)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
