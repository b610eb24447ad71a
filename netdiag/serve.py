"""`netdiag serve`: a Prometheus exporter a Prometheus server can scrape over the network.

Each scrape of /metrics is answered from one run of `netdiag check --format prometheus` in a
child process (its own process group, killed after --timeout), reused for --min-interval
seconds; concurrent scrapes share a run. A failed run serves the last good metrics with
netdiag_exporter_last_run_success 0. The child's output is parsed with prometheus_client and
written back in the format the scraper asks for (text 0.0.4 or OpenMetrics, by its Accept
header), together with the exporter's own metrics.

The HTTP side is asyncio (timeouts, TLS, non-blocking accept) with h11 parsing HTTP/1.1, and
the limits an exporter exposed to a network needs:
- at most --max-connections connections. Past it, the connection that has waited longest
  without a complete request (a TLS handshake, a partial request or an idle keep-alive) is
  closed to make room; when every connection has a request in progress, the new one gets
  503 (TLS: is closed) and a log line;
- the request head (and a TLS handshake) must arrive within --read-timeout of its first byte;
  a response must be taken within --write-timeout; an idle keep-alive ends after
  IDLE_TIMEOUT; request heads over 16 KiB and bodies over 64 KiB are refused;
- accept() failing for want of file descriptors (EMFILE) closes the oldest idle connection
  and retries after a back-off (5 ms doubling to 1 s), never in a busy loop;
- SIGTERM/SIGINT: stop accepting, kill the check's process group, let the responses in
  flight finish (bounded), exit 0;
- log lines are one line each, and repeated ones are rate-limited.
TLS and basic authentication come from an exporter-toolkit web configuration file
(netdiag.webconfig).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

IDLE_TIMEOUT = 120.0  # a kept-alive connection between scrapes
MAX_HEAD_BYTES = 16384
MAX_BODY_BYTES = 65536
MAX_OUTPUT_BYTES = 256 << 20  # a check's output (a host with very many namespaces)
MAX_STDERR_BYTES = 16384
CHUNK = 65536
ACCEPT_BATCH = 64
BACKOFF_MIN, BACKOFF_MAX = 0.005, 1.0
REFUSE_LINGER = 1.0  # a refused connection is drained this long before it is closed
MAX_REFUSING = 64
FD_RESERVE = 32  # descriptors kept free for the check child, the event loop, the log
LOG_EVERY = 10.0  # the same kind of log line at most once per LOG_EVERY seconds
KILL_GRACE = 2.0


@dataclass
class Limits:
    max_connections: int = 64
    read_timeout: float = 10.0
    write_timeout: float = 30.0
    idle_timeout: float = IDLE_TIMEOUT


class Log:
    """One line per event on stderr (the journal); the same kind at most once per LOG_EVERY
    seconds, saying how many were left out."""

    def __init__(self, out=None) -> None:
        self.out = out
        self.last: dict[str, float] = {}
        self.quiet: dict[str, int] = {}

    def __call__(self, kind: str, message: str, always: bool = False) -> None:
        now = time.monotonic()
        if not always and now - self.last.get(kind, -LOG_EVERY) < LOG_EVERY:
            self.quiet[kind] = self.quiet.get(kind, 0) + 1
            return
        self.last[kind] = now
        more = self.quiet.pop(kind, 0)
        tail = f" ({more} more like it not logged)" if more else ""
        line = " ".join(f"{message}{tail}".split())
        out = self.out or sys.stderr
        try:
            out.write(f"netdiag serve: {line}\n")
            out.flush()
        except (OSError, ValueError):
            pass


# ---- the check runs --------------------------------------------------------------------------

class Exporter:
    """Runs the check in a child process and keeps the last good metrics."""

    def __init__(self, args: list[str], min_interval: float, timeout: float,
                 log: Log | None = None) -> None:
        self.args = args
        self.min_interval = min_interval
        self.timeout = timeout
        self.log = log or Log()
        self.families: list | None = None  # the last good run's metric families
        self.generation = 0
        self.encoded: dict[str, bytes] = {}
        self.at = 0.0  # monotonic end of the last run
        self.success = 0
        self.success_at = 0.0  # wall clock of the last good run
        self.duration = 0.0
        self.runs = 0
        self.child: asyncio.subprocess.Process | None = None
        self.running: asyncio.Task | None = None
        self.stopping = False
        self.pool: ThreadPoolExecutor | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "netdiag", "check", "--format", "prometheus", *self.args]

    async def current(self) -> None:
        """Make sure the metrics are no older than --min-interval (one run at a time;
        concurrent scrapes wait for the same run)."""
        fresh = self.families is not None and time.monotonic() - self.at < self.min_interval
        if fresh or self.stopping:
            return
        if self.running is None or self.running.done():
            self.running = asyncio.get_running_loop().create_task(self._run())
        # A scrape that goes away must not cancel the run other scrapes wait for.
        await asyncio.shield(self.running)

    async def _run(self) -> None:
        start = time.monotonic()
        ok = False
        try:
            text = await self._child()
            if text is not None:
                families = await asyncio.get_running_loop().run_in_executor(
                    self.pool, _parse, text)
                if families is None:
                    self.log("run", "the check's output is not in the Prometheus text format")
                else:
                    self.families, self.encoded = families, {}
                    self.generation += 1
                    ok = True
        finally:
            self.success = 1 if ok else 0
            self.duration = time.monotonic() - start
            self.at = time.monotonic()
            self.runs += 1
            if ok:
                self.success_at = time.time()

    async def _child(self) -> str | None:
        env = dict(os.environ, NETDIAG_NO_PROGRESS="1")
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, env=env)
        except OSError as exc:
            self.log("run", f"cannot start the check: {exc.strerror or exc}")
            return None
        self.child = proc
        try:
            out, err = await asyncio.wait_for(self._collect(proc), self.timeout)
        except asyncio.TimeoutError:
            self.log("run", f"the check exceeded --timeout {self.timeout:g} s; killed it "
                            "(serving the last good metrics)")
            return None
        except _TooLarge:
            self.log("run", f"the check wrote more than {MAX_OUTPUT_BYTES >> 20} MiB; "
                            "killed it")
            return None
        finally:
            await self._reap(proc)
            self.child = None
        if self.stopping:
            return None
        if proc.returncode not in (0, 1, 2, 3) or not out.startswith(b"# HELP"):
            message = err.decode("utf-8", "replace").strip().splitlines()
            self.log("run", f"the check failed (exit {proc.returncode}): "
                            f"{(message[-1] if message else 'no output')[:300]}")
            return None
        return out.decode("utf-8", "replace")

    async def _collect(self, proc) -> tuple[bytes, bytes]:
        async def drain(stream, limit: int, keep_tail: bool) -> bytes:
            buf = bytearray()
            while True:
                chunk = await stream.read(CHUNK)
                if not chunk:
                    return bytes(buf)
                buf += chunk
                if len(buf) > limit:
                    if not keep_tail:
                        raise _TooLarge()
                    del buf[:len(buf) - limit]

        out, err = await asyncio.gather(drain(proc.stdout, MAX_OUTPUT_BYTES, False),
                                        drain(proc.stderr, MAX_STDERR_BYTES, True))
        await proc.wait()
        return out, err

    async def _reap(self, proc) -> None:
        """The child and everything in its process group are gone when this returns."""
        if proc.returncode is None:
            _killpg(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE * 5)
        except asyncio.TimeoutError:
            self.log("run", f"check process {proc.pid} did not exit after SIGKILL")
        _killpg(proc.pid, signal.SIGKILL)  # anything it left in its group

    async def stop(self) -> None:
        """Shutting down: end a run in progress (SIGTERM to its group, SIGKILL after a grace)
        and wait until it is reaped."""
        self.stopping = True
        proc = self.child
        if proc is not None and proc.returncode is None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), KILL_GRACE)
            except asyncio.TimeoutError:
                pass
        if self.running is not None and not self.running.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.running), KILL_GRACE * 6)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass

    def body(self, encoder: Callable, content_type: str, own: list) -> bytes:
        """The last good metrics and the exporter's own, in the negotiated format. The check's
        part is encoded once per run and format."""
        cached = self.encoded.get(content_type)
        if cached is None:
            cached = encoder(_Families(self.families or []))
            if cached.endswith(b"# EOF\n"):  # OpenMetrics: the terminator goes at the end
                cached = cached[:-len(b"# EOF\n")]
            self.encoded[content_type] = cached
        return cached + encoder(_Families(own))


class _TooLarge(Exception):
    pass


class _Families:
    """What prometheus_client's encoders read: an object whose collect() yields families."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def _parse(text: str) -> list | None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = [f for f in text_string_to_metric_families(text)
                    if not f.name.startswith("netdiag_exporter_")]
    except (ValueError, IndexError, TypeError):
        return None
    if not any(f.name == "netdiag_status" for f in families):
        return None
    return families


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---- HTTP --------------------------------------------------------------------------------------

REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
           b"Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
           b"too many connections\n")
EVICTABLE = ("opening", "handshake", "reading", "idle")


class Connection(asyncio.Protocol):
    """One client connection: h11 parses, the server decides, timers bound every state."""

    def __init__(self, server: Server, sock: socket.socket, peer: str) -> None:
        import h11

        self.server, self.sock, self.peer = server, sock, peer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.transport: Any = None
        self.state = "opening"  # "handshake" while TLS is negotiated
        self.since = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None
        self.request: Any = None
        self.body_bytes = 0
        self.got_bytes = False
        self.pending = 0  # bytes received while a response is in progress
        self.writable = asyncio.Event()
        self.writable.set()
        self.responding = False
        self.ending = False  # this side closes: not the client's doing
        self.closed = False

    # -- states and timers

    def enter(self, state: str, timeout: float | None) -> None:
        self.state = state
        self.since = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if timeout is not None:
            self.timer = asyncio.get_running_loop().call_later(timeout, self._expired, state)

    def _expired(self, state: str) -> None:
        self.timer = None
        if self.closed or state != self.state:
            return
        limits = self.server.limits
        if state == "reading":
            what = "a partial request" if self.got_bytes else "no request"
            self.server.count("read_timeout")
            self.server.log("read-timeout", f"closed the connection from {self.peer}: {what} "
                                            f"within --read-timeout {limits.read_timeout:g} s")
            if self.got_bytes:
                self._simple(408, b"request timeout\n")
            self.close()
        elif state == "idle":
            self.close()
        elif state == "writing":
            self.server.count("write_timeout")
            self.server.log("write-timeout", f"closed the connection to {self.peer}: the "
                                             "response was not taken within --write-timeout "
                                             f"{limits.write_timeout:g} s")
            self.abort()

    # -- asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.server.stopping:
            self.close()
            return
        watcher = self.server.watcher
        if watcher is not None and watcher.tls:
            from netdiag.webconfig import peer_allowed

            if not peer_allowed(watcher.config, transport.get_extra_info("peercert")):
                self.server.count("tls_handshake")
                self.server.log("tls-sans", f"refused {self.peer}: its client certificate names "
                                       "none of client_allowed_sans")
                self.abort()
                return
        self.enter("reading", self.server.limits.read_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.state in ("busy", "writing"):
            # The next request of a pipelining client: h11 keeps it for the next cycle.
            self.pending += len(data)
            if self.pending > MAX_HEAD_BYTES:
                self.server.count("bad_request")
                self.abort()
                return
            self.h11.receive_data(data)
            return
        if self.state == "idle":
            self.enter("reading", self.server.limits.read_timeout)
        self.got_bytes = True
        self.h11.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        if self.state in EVICTABLE:
            return False  # nothing to answer: close
        try:
            self.h11.receive_data(b"")
        except Exception:  # noqa: BLE001 (h11 refuses data after a close: nothing to do)
            pass
        # A client that shut down its sending side still gets its answer (plain TCP only:
        # TLS cannot half-close).
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        was_responding = self.responding and not self.closed and not self.ending
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.writable.set()
        if was_responding:
            self.server.count("client_reset")
            why = type(exc).__name__ if exc is not None else "closed the connection"
            self.server.log("client-reset", f"{self.peer} went away before its response was "
                                            f"complete ({why})")
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- requests

    def _process(self) -> None:
        import h11

        while not self.closed:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self.server.count("bad_request")
                status = exc.error_status_hint or 400
                self.server.log("bad-request", f"bad request from {self.peer}: {exc} "
                                               f"(answered {status})")
                self._simple(status, b"bad request\n")
                self.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request, self.body_bytes = event, 0
            elif isinstance(event, h11.Data):
                self.body_bytes += len(event.data)
                if self.body_bytes > MAX_BODY_BYTES:
                    self.server.count("bad_request")
                    self._simple(413, b"request body too large\n")
                    self.close()
                    return
            elif isinstance(event, h11.EndOfMessage):
                # Reading goes on while the answer is prepared, so that a client that goes
                # away is noticed at once (its next request waits in h11, bounded).
                self.enter("busy", None)
                self.task = asyncio.get_running_loop().create_task(self._respond())
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    async def _respond(self) -> None:
        import h11

        self.responding = True
        try:
            status, headers, body = await self.server.handle(self, self.request)
            if self.closed:
                return
            await self._send(status, headers, body)
        except asyncio.CancelledError:
            self.abort()
            raise
        except (ConnectionError, h11.LocalProtocolError, OSError):
            self.abort()
            return
        except Exception as exc:  # noqa: BLE001 (a bug: one line, this connection only)
            self.server.log("internal", f"internal error answering {self.peer}: "
                                        f"{type(exc).__name__}: {exc}", always=True)
            self.abort()
            return
        finally:
            self.responding = False
        if self.closed:
            return
        if (self.server.stopping or self.h11.our_state is not h11.DONE
                or self.h11.their_state is not h11.DONE):
            self.close()
            return
        self.h11.start_next_cycle()
        self.got_bytes, self.pending = False, 0
        self.enter("idle", self.server.limits.idle_timeout)
        self._process()  # a pipelined request already received

    async def _send(self, status: int, headers: list, body: bytes) -> None:
        import h11

        head_only = self.request is not None and self.request.method == b"HEAD"
        self.enter("writing", self.server.limits.write_timeout)
        self.transport.write(self.h11.send(h11.Response(status_code=status, headers=headers,
                                                         reason=_reason(status))))
        if not head_only:
            view = memoryview(body)
            for start in range(0, len(view), CHUNK):
                await self.writable.wait()
                if self.closed:
                    raise ConnectionResetError("closed")
                self.transport.write(self.h11.send(h11.Data(data=view[start:start + CHUNK])))
        self.transport.write(self.h11.send(h11.EndOfMessage()))
        await self.writable.wait()
        if self.closed:
            raise ConnectionResetError("closed")
        self.server.count_request(status)

    def _simple(self, status: int, body: bytes) -> None:
        """An error answer written at once (no await), when h11 still allows one."""
        import h11

        if self.transport is None or self.closed:
            return
        try:
            if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return
            headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                       ("Connection", "close")]
            data = self.h11.send(h11.Response(status_code=status, headers=headers,
                                              reason=_reason(status)))
            data += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
            self.transport.write(data)
            self.server.count_request(status)
        except h11.LocalProtocolError:
            pass

    def close(self) -> None:
        self.ending = True
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.server.forget(self)

    def abort(self) -> None:
        self.ending = True
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.server.forget(self)


class Server:
    def __init__(self, exporter: Exporter, limits: Limits, watcher: Any = None,
                 log: Log | None = None) -> None:
        from netdiag.webconfig import Authenticator

        self.exporter = exporter
        self.limits = limits
        self.watcher = watcher
        self.log = log or exporter.log
        self.auth = Authenticator()
        self.conns: dict[int, Connection] = {}
        self.starting: dict[int, asyncio.Task] = {}
        self.refusing: set[socket.socket] = set()
        self.listeners: list[socket.socket] = []
        self.stopping = False
        self.stopped: asyncio.Future | None = None
        self.backoff = BACKOFF_MIN
        self.paused = False
        self.dropped: dict[str, int] = {}
        self.requests: dict[int, int] = {}
        self.accept_errors = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- bookkeeping

    def count(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def count_request(self, status: int) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1

    def forget(self, conn: Connection) -> None:
        self.conns.pop(id(conn), None)
        task = self.starting.pop(id(conn), None)
        if task is not None and not task.done():
            task.cancel()

    # -- accepting

    async def run(self, listeners: list[socket.socket], early: list[int] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopped = self.loop.create_future()
        self.exporter.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="netdiag")
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop, sig)
        if early:  # stopped before the loop could listen for signals
            self.stop(early[0])
        self.listeners = listeners
        for sock in listeners:
            sock.setblocking(False)
            self.loop.add_reader(sock.fileno(), self._accept, sock)
        try:
            await self.stopped
        finally:
            await self._shutdown()
            self.exporter.pool.shutdown(wait=False)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.log("stop", f"{signal.Signals(sig).name} received: stopping", always=True)
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_descriptors(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                self.log("accept", f"accept failed: {exc.strerror or exc}")
                return
            self.backoff = BACKOFF_MIN
            peer = _peer(addr)
            if self.stopping:
                sock.close()
                continue
            if len(self.conns) >= self.limits.max_connections and not self._evict():
                self._refuse(sock, peer)
                continue
            self._open(sock, peer)

    def _out_of_descriptors(self, exc: OSError) -> None:
        """accept() found no free descriptor: make room, and try again later, not at once."""
        self.accept_errors += 1
        evicted = self._evict(reason="fd_limit")
        delay = self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.log("emfile", f"accept: {exc.strerror} ({len(self.conns)} connections open, "
                           f"file descriptor limit {soft}); "
                           f"{'closed the oldest idle connection; ' if evicted else ''}"
                           f"accepting again in {delay:g} s")
        self._pause_accepting(delay)

    def _pause_accepting(self, delay: float) -> None:
        if self.paused or self.loop is None:
            return
        self.paused = True
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())
        self.loop.call_later(delay, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self.paused = False
        if self.stopping or self.loop is None:
            return
        for sock in self.listeners:
            self.loop.add_reader(sock.fileno(), self._accept, sock)
            self._accept(sock)

    def _evict(self, reason: str = "evicted") -> bool:
        """Close the connection that has waited longest without a complete request."""
        victim = None
        for conn in self.conns.values():
            if conn.state in EVICTABLE and (victim is None or conn.since < victim.since):
                victim = conn
        if victim is None:
            return False
        self.count(reason)
        if victim.state != "idle":
            self.log("evict", f"closed the connection from {victim.peer} ({victim.state}, "
                              f"{time.monotonic() - victim.since:.1f} s without a request) to "
                              f"make room: {len(self.conns)} connections open, --max-"
                              f"connections {self.limits.max_connections}")
        victim.abort()  # during a handshake: cancels it, and asyncio closes the socket
        return True

    def _refuse(self, sock: socket.socket, peer: str) -> None:
        self.count("limit")
        self.log("limit", f"refused {peer}: {len(self.conns)} connections open, each with a "
                          f"request in progress (--max-connections "
                          f"{self.limits.max_connections})")
        tls = self.watcher is not None and self.watcher.tls
        if tls or len(self.refusing) >= MAX_REFUSING or self.loop is None:
            sock.close()
            return
        sock.setblocking(False)
        try:
            sock.send(REFUSAL)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        # Read what the client sends until it closes (or REFUSE_LINGER passes), so that the
        # close does not reset the connection before the 503 is read.
        self.refusing.add(sock)
        fd = sock.fileno()

        def done() -> None:
            if sock in self.refusing:
                self.refusing.discard(sock)
                self.loop.remove_reader(fd)
                sock.close()

        def readable() -> None:
            try:
                if sock.recv(4096):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            done()

        self.loop.add_reader(fd, readable)
        self.loop.call_later(REFUSE_LINGER, done)

    def _open(self, sock: socket.socket, peer: str) -> None:
        conn = Connection(self, sock, peer)
        self.conns[id(conn)] = conn
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        ctx = self.watcher.context if self.watcher is not None else None
        if ctx is not None:
            self.watcher.refresh(self.log)  # rotated certificates take effect here
            ctx = self.watcher.context
            conn.enter("handshake", None)
        self.starting[id(conn)] = self.loop.create_task(self._start(conn, ctx))

    async def _start(self, conn: Connection, ctx) -> None:
        try:
            if ctx is None:
                await self.loop.connect_accepted_socket(lambda: conn, conn.sock)
            else:
                await self.loop.connect_accepted_socket(
                    lambda: conn, conn.sock, ssl=ctx,
                    ssl_handshake_timeout=self.limits.read_timeout)
        except asyncio.CancelledError:
            conn.sock.close()
            raise
        except Exception as exc:  # noqa: BLE001 (handshake failures are the client's)
            conn.sock.close()
            self.forget(conn)
            if self.stopping:
                return
            self.count("tls_handshake")
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            self.log("tls", f"TLS handshake with {conn.peer} failed: {reason}")
            return
        self.starting.pop(id(conn), None)

    # -- answering

    async def handle(self, conn: Connection, request) -> tuple[int, list, bytes]:
        headers = {}
        for name, value in request.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        extra: list[tuple[str, str]] = []
        if self.stopping:
            extra.append(("Connection", "close"))
        watcher = self.watcher
        if watcher is not None:
            watcher.refresh(self.log)
            if watcher.error:
                return _plain(500, b"Internal Server Error: the web configuration is "
                                   b"invalid (see the exporter's log)\n", extra)
            extra += list(watcher.config.headers.items())
            if not watcher.limiter.allow():
                return _plain(429, b"Too Many Requests\n", extra)
            users = watcher.config.users
            if users:
                ok = await self.loop.run_in_executor(self.exporter.pool, self.auth.check,
                                                     users, headers.get("authorization"))
                if not ok:
                    self.count("auth")
                    self.log("auth", f"authentication failed for {conn.peer}")
                    return _plain(401, b"Unauthorized\n",
                                  extra + [("WWW-Authenticate", "Basic")])
        method = request.method
        path = request.target.split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _plain(405, b"Method Not Allowed\n", extra + [("Allow", "GET, HEAD")])
        if path == b"/metrics":
            return await self._metrics(headers, extra)
        if path == b"/":
            return _plain(200, b"netdiag exporter\n/metrics: the metrics (netdiag check, "
                               b"Prometheus text or OpenMetrics)\n", extra)
        return _plain(404, b"Not Found\n", extra)

    async def _metrics(self, headers: dict, extra: list) -> tuple[int, list, bytes]:
        from prometheus_client.exposition import choose_encoder

        await self.exporter.current()
        if self.exporter.families is None:
            return _plain(503, b"no check has succeeded yet (see the exporter's log)\n",
                          extra + [("Retry-After", "5")])
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = self.exporter.body(encoder, content_type, self.own_families())
        out = [("Content-Type", content_type)] + extra
        if _accepts_gzip(headers.get("accept-encoding", "")):
            import gzip

            body = gzip.compress(body, compresslevel=1)
            out += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
        out.append(("Content-Length", str(len(body))))
        return 200, out, body

    def own_families(self) -> list:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ex = self.exporter
        fams: list = [
            GaugeMetricFamily("netdiag_exporter_last_run_success",
                              "1 if the last check run succeeded; 0 if it failed or timed "
                              "out (the last good metrics are served).", value=ex.success),
            GaugeMetricFamily("netdiag_exporter_last_success_timestamp_seconds",
                              "When the metrics served were taken (Unix time).",
                              value=ex.success_at),
            GaugeMetricFamily("netdiag_exporter_run_duration_seconds",
                              "Duration of the last check run.", value=round(ex.duration, 3)),
            CounterMetricFamily("netdiag_exporter_runs", "Check runs since the exporter "
                                "started.", value=ex.runs),
            GaugeMetricFamily("netdiag_exporter_connections", "Client connections open now.",
                              value=len(self.conns)),
            GaugeMetricFamily("netdiag_exporter_connections_limit",
                              "--max-connections.", value=self.limits.max_connections),
            CounterMetricFamily("netdiag_exporter_accept_errors",
                                "accept() failures for want of file descriptors (each one "
                                "backs off).", value=self.accept_errors),
        ]
        dropped = CounterMetricFamily(
            "netdiag_exporter_connections_dropped", "Connections closed by the exporter, by "
            "reason: limit, evicted, fd_limit, read_timeout, write_timeout, tls_handshake, "
            "client_reset, bad_request, auth (a refused password).", labels=["reason"])
        for reason in ("limit", "evicted", "fd_limit", "read_timeout", "write_timeout",
                       "tls_handshake", "client_reset", "bad_request", "auth"):
            dropped.add_metric([reason], self.dropped.get(reason, 0))
        fams.append(dropped)
        reqs = CounterMetricFamily("netdiag_exporter_http_requests",
                                   "HTTP responses sent, by status code.", labels=["code"])
        for code in sorted(self.requests):
            reqs.add_metric([str(code)], self.requests[code])
        fams.append(reqs)
        return fams

    # -- stopping

    async def _shutdown(self) -> None:
        for sock in self.listeners:
            if self.loop is not None and not self.paused:
                self.loop.remove_reader(sock.fileno())
            sock.close()
        for conn in list(self.conns.values()):
            if conn.state in EVICTABLE:
                conn.abort()
        await self.exporter.stop()
        tasks = [c.task for c in self.conns.values() if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=min(self.limits.write_timeout, 5.0))
        for conn in list(self.conns.values()):
            conn.abort()
        for task in list(self.starting.values()):
            task.cancel()
        for sock in list(self.refusing):
            sock.close()
        self.refusing.clear()


def _reason(status: int) -> bytes:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _plain(status: int, body: bytes, extra: list) -> tuple[int, list, bytes]:
    return status, [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body)))] + extra, body


def _accepts_gzip(header: str) -> bool:
    """Accept-Encoding names gzip with a weight above 0."""
    for part in header.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        if name.lower() != "gzip":
            continue
        weight = 1.0
        for param in params:
            if param.lower().startswith("q="):
                try:
                    weight = float(param[2:])
                except ValueError:
                    weight = 0.0
        return weight > 0
    return False


def _peer(addr) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


# ---- start-up ----------------------------------------------------------------------------------

def open_listener(host: str, port: int) -> socket.socket:
    """A listening socket for ADDR:PORT; [::] listens on IPv6 and IPv4 (as Go does)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    family, _, _, _, addr = infos[0]
    dual = family == socket.AF_INET6 and ipaddress.ip_address(addr[0].split("%")[0]) == \
        ipaddress.IPv6Address("::")
    return socket.create_server(addr, family=family, backlog=511, dualstack_ipv6=dual)


def fd_budget(limits: Limits, log: Log) -> None:
    """Raise the soft descriptor limit to the hard one (as Go programs do), and keep
    --max-connections within it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    room = soft - FD_RESERVE - MAX_REFUSING if soft != resource.RLIM_INFINITY else 1 << 30
    if limits.max_connections > room:
        limits.max_connections = max(1, room)
        log("limits", f"--max-connections lowered to {limits.max_connections}: the file "
                      f"descriptor limit is {soft}", always=True)


def serve(host: str, port: int, exporter: Exporter, limits: Limits,
          web_config: str | None = None) -> None:
    from netdiag.errors import UsageError

    log = exporter.log
    watcher = None
    if web_config is not None:
        from netdiag.webconfig import Watcher

        watcher = Watcher(web_config)
    try:
        sock = open_listener(host, port)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"cannot listen on {_peer((host, port))}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    fd_budget(limits, log)
    bound = sock.getsockname()
    tls = watcher is not None and watcher.tls
    auth = watcher is not None and (bool(watcher.config.users) or (
        watcher.config.tls is not None and watcher.config.tls.client_auth ==
        "RequireAndVerifyClientCert"))
    scheme = "https" if tls else "http"
    features = [f"at most {limits.max_connections} connections",
                f"read timeout {limits.read_timeout:g} s"]
    if tls:
        features.insert(0, "TLS")
    if watcher is not None and watcher.config.users:
        features.insert(1 if tls else 0, "basic auth")
    if tls and watcher.config.tls.client_auth != "NoClientCert":
        features.insert(1, f"client certificates ({watcher.config.tls.client_auth})")
    # A stop request that arrives before the event loop installs its handlers is kept and
    # honoured as soon as the loop runs (never the CLI's default "interrupted", exit 3).
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    log("start", f"listening on {scheme}://{_peer(bound)}/metrics ({', '.join(features)})",
        always=True)
    if not _loopback(bound[0]):
        missing = [w for w, ok in (("TLS", tls), ("authentication", auth)) if not ok]
        if missing:
            log("start", f"warning: {_peer(bound)} is reachable from other hosts and is "
                         f"served without {' and without '.join(missing)}: the metrics name "
                         "this host's processes, ports and peers; configure "
                         "tls_server_config and basic_auth_users in --web-config",
                always=True)
    try:
        asyncio.run(Server(exporter, limits, watcher, log).run([sock], early))
    finally:
        sock.close()


def _loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback
