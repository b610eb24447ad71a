"""Symptoms an application reports, and the kernel causes that produce each.

Pure data: what the symptom is called (errno name, the message strerror gives, a short word),
which calls return it, and for each candidate cause the kernel path, the documented rule and
the action. netdiag.diagnose.judge weighs the evidence for each cause.

Facts are from /work/shared/docs/symptoms-and-limits.md §1 (checked on 6.18 and in the kernel
sources named in each rule).
"""

from __future__ import annotations

import difflib
import errno as _errno
import os
from dataclasses import dataclass

from netdiag.model import Rule


@dataclass(frozen=True)
class CauseSpec:
    id: str  # stable: "<symptom>.<cause>", lower case
    title: str
    mechanism: str  # what the kernel does, in its terms
    rule: Rule
    action: str


@dataclass(frozen=True)
class Symptom:
    name: str  # canonical, as `netdiag why` lists it
    title: str
    errnos: tuple[str, ...]
    words: tuple[str, ...]  # short names
    messages: tuple[str, ...]  # what applications print (lower case)
    returned_by: str
    causes: tuple[CauseSpec, ...]
    # The probes whose evidence decides its causes (run with --probe-seconds).
    probes: tuple[str, ...] = ()


def _c(sym: str, cid: str, title: str, mechanism: str, text: str, source: str,
       action: str) -> CauseSpec:
    return CauseSpec(f"{sym}.{cid}", title, mechanism, Rule(text, source), action)


_R = "econnreset"
ECONNRESET = Symptom(
    "ECONNRESET", "connection reset by peer", ("ECONNRESET",), ("reset", "rst"),
    ("connection reset by peer", "connection reset", "reset by peer", "econnreset"),
    "read/recv, write/send (the first call after a RST arrives; later writes get EPIPE)",
    (
        _c(_R, "no_socket", "No socket for the connection on the sending host",
           "A segment reached a host with no matching socket (the port closed, the process "
           "died, the host rebooted, the TIME_WAIT expired) and its tcp_v4_rcv() answered with "
           "a RST (reason NO_SOCKET).",
           "A segment for which no socket exists is answered with a reset.",
           "RFC 9293 §3.5.2 (Reset Generation); net/ipv4/tcp_ipv4.c tcp_v4_rcv() "
           "no_tcp_socket; include/net/rstreason.h SK_RST_REASON_NO_SOCKET",
           "Find why the service's socket went away: a restarted or crashed process, a "
           "listener that was closed, a client reusing a connection the server already "
           "dropped (align idle timeouts: the client's pool must time out first)."),
        _c(_R, "linger_zero", "The peer closed with SO_LINGER 0 (an abortive close)",
           "close() with SO_LINGER {1, 0} aborts: tcp_disconnect() sends a RST (reason "
           "TCP_STATE) and TCPAbortOnData counts it.",
           "SO_LINGER with a zero timeout: close() discards unsent data and resets the "
           "connection.",
           "socket(7): SO_LINGER; net/ipv4/tcp.c tcp_disconnect(); "
           "include/net/rstreason.h SK_RST_REASON_TCP_STATE",
           "Find the application that sets SO_LINGER 0 (load balancers and some clients do it "
           "on purpose to avoid TIME_WAIT); if its peer must not see errors, let it close "
           "normally."),
        _c(_R, "close_unread", "The peer closed a socket that still had unread data",
           "tcp_close() with data left in the receive queue sends a RST instead of a FIN "
           "(reason TCP_ABORT_ON_CLOSE) and TCPAbortOnClose counts it; a process that exits "
           "or is killed does the same.",
           "If a connection is closed with unread received data, a RST is sent instead of a "
           "FIN (RFC 2525 §2.17).",
           "net/ipv4/tcp.c __tcp_close() (data_was_unread); RFC 2525 §2.17; "
           "include/net/rstreason.h SK_RST_REASON_TCP_ABORT_ON_CLOSE",
           "The closing side must read (or at least drain) what the other side sent before "
           "closing, e.g. a server that answers an error without reading the request body. "
           "shutdown(SHUT_WR) alone does not avoid the RST: the graceful sequence is "
           "shutdown(SHUT_WR), read until read() returns 0 (end of file), then close()."),
        _c(_R, "overflow_abort", "Accept queue overflow with tcp_abort_on_overflow=1",
           "The listener's accept queue was full when the final ACK of a handshake arrived; "
           "with tcp_abort_on_overflow=1 tcp_check_req() answers it with a RST (reason "
           "INVALID_SYN). The client's connect() already succeeded: its first read or write "
           "gets ECONNRESET.",
           "tcp_abort_on_overflow: if the listening service is too slow to accept new "
           "connections, reset them. Default: off.",
           "Documentation/networking/ip-sysctl.rst: tcp_abort_on_overflow; "
           "net/ipv4/tcp_minisocks.c tcp_check_req()",
           "Find why the server does not accept in time (backlog.accept_queue_full names the "
           "listener and what its process does) and set tcp_abort_on_overflow back to 0, so "
           "that clients retry instead of failing."),
        _c(_R, "request_expired", "The handshake expired on a full listener (TCP_FLAGS)",
           "With the accept queue full and tcp_abort_on_overflow=0, the server drops the "
           "final ACK and retransmits its SYN-ACK up to tcp_synack_retries (about 63 s); the "
           "request then expires, and the client's later data reaches a listener with no "
           "matching request: RST with reason TCP_FLAGS.",
           "tcp_synack_retries: number of times SYNACKs for a passive TCP connection attempt "
           "will be retransmitted (default 5, about 63 s).",
           "Documentation/networking/ip-sysctl.rst: tcp_synack_retries; net/ipv4/tcp_input.c "
           "tcp_rcv_state_process() (LISTEN branch)",
           "Treat the full accept queue (backlog.accept_queue_full, backlog.listen_overflow)."),
        _c(_R, "keepalive_timeout", "Keepalive gave up on the connection",
           "tcp_keepalive_timer() sent tcp_keepalive_probes probes without answer and aborted "
           "the connection with a RST (reason TCP_KEEPALIVE_TIMEOUT); TCPAbortOnTimeout "
           "counts it.",
           "tcp_keepalive_probes: how many keepalive probes TCP sends out, until it decides "
           "that the connection is broken.",
           "Documentation/networking/ip-sysctl.rst: tcp_keepalive_*; net/ipv4/tcp_timer.c "
           "tcp_keepalive_timer()",
           "The peer or the path stopped answering: check the peer's health and any NAT or "
           "firewall idle timeout between the two."),
        _c(_R, "orphan_memory", "TCP memory or orphan limits (TCP_ABORT_ON_MEMORY)",
           "Over tcp_max_orphans or tcp_mem, tcp_close()/tcp_out_of_resources() reset "
           "orphaned connections instead of finishing them; TCPAbortOnMemory counts it.",
           "tcp_max_orphans: maximal number of TCP sockets not attached to any user file "
           "handle; if exceeded, orphaned connections are reset at once.",
           "Documentation/networking/ip-sysctl.rst: tcp_max_orphans, tcp_mem; net/ipv4/tcp.c "
           "tcp_check_oom()",
           "Find what holds TCP memory (buffers.memory_pressure) and why orphans pile up."),
        _c(_R, "middlebox", "A firewall, load balancer or NAT on the path sent the RST",
           "RSTs made by netfilter (reject with tcp reset), middleboxes or non-Linux peers are "
           "not sent by this kernel's TCP: the receiver sees them (tcp_receive_reset) with no "
           "matching tcp_send_reset on the peer.",
           "A reset accepted by the receiver aborts the connection (tcp_reset()).",
           "net/ipv4/tcp_input.c tcp_reset(); net/ipv4/netfilter/nf_reject_ipv4.c",
           "Look at the firewall rules and the load balancer's idle timeout between the two "
           "hosts; run netdiag on the peer to see whether it sent the RST."),
    ),
    ("resets", "errors"),
)

_F = "econnrefused"
ECONNREFUSED = Symptom(
    "ECONNREFUSED", "connection refused", ("ECONNREFUSED",), ("refused",),
    ("connection refused", "econnrefused"),
    "connect() (a RST answered the SYN)",
    (
        _c(_F, "no_listener", "Nothing listens on that address and port",
           "The SYN reached a host where no socket listens on the port: tcp_v4_rcv() answers "
           "with a RST (reason NO_SOCKET) and the client's tcp_reset() in SYN_SENT turns it "
           "into ECONNREFUSED.",
           "A SYN to a port without a listener is answered with a reset; in SYN-SENT the "
           "client reports 'connection refused'.",
           "RFC 9293 §3.5.2; net/ipv4/tcp_input.c tcp_reset() (SYN_SENT -> ECONNREFUSED)",
           "Start the service, or fix the address/port the client uses. A service bound to "
           "127.0.0.1 is not reachable on the host's other addresses."),
        _c(_F, "firewall_reset", "A firewall rejects with a TCP reset",
           "netfilter's `reject with tcp reset` answers the SYN itself (nf_send_reset), so no "
           "tcp_send_reset fires on the server host.",
           "A REJECT rule with tcp-reset answers the SYN with a RST on the firewall's behalf.",
           "net/ipv4/netfilter/nf_reject_ipv4.c nf_send_reset()",
           "Check the firewall rules (nft list ruleset, iptables -S) on the path and on the "
           "server."),
        _c(_F, "icmp_unreachable", "An ICMP port-unreachable answered the SYN",
           "A firewall's default REJECT sends ICMP port-unreachable; tcp_v4_err() in SYN_SENT "
           "aborts the attempt with ECONNREFUSED; no RST is involved "
           "(Icmp.InDestUnreachs counts it).",
           "In SYN-SENT, ICMP destination-unreachable errors abort the connection attempt.",
           "net/ipv4/tcp_ipv4.c tcp_v4_err(); net/ipv4/icmp.c icmp_err_convert[]",
           "Check firewall REJECT rules on the path and on the server."),
    ),
    ("resets", "errors", "drops"),
)

_T = "etimedout"
ETIMEDOUT = Symptom(
    "ETIMEDOUT", "connection timed out", ("ETIMEDOUT",), ("timeout", "timed-out"),
    ("connection timed out", "connect timed out", "timed out", "read timed out",
     "operation timed out", "etimedout", "i/o timeout", "deadline exceeded"),
    "connect() (no answer to the SYNs), read/write (retransmissions or keepalive gave up)",
    (
        _c(_T, "accept_queue_full", "The server's accept queue is full: SYNs and ACKs dropped",
           "While a listener's accept queue is full the server drops new SYNs (and final "
           "ACKs): ListenOverflows counts them; the client retransmits its SYN after 1, 2, "
           "4 ... s and connect() times out after tcp_syn_retries.",
           "When the accept queue is full, new connection requests are dropped "
           "(ListenOverflows).",
           "Documentation/networking/snmp_counter.rst: ListenOverflows; listen(2)",
           "Find why the server does not accept as fast as connections arrive "
           "(backlog.accept_queue_full names the listener and what its process does); for "
           "bursts raise the number that bounds its queue: the application's listen() value "
           "when it is below net.core.somaxconn, somaxconn when it cuts a larger request."),
        _c(_T, "syn_queue_drop", "The server's SYN queue overflowed without SYN cookies",
           "With tcp_syncookies=0 (or the queue full beyond cookies), SYNs are dropped: "
           "TCPReqQFullDrop counts them.",
           "tcp_syncookies: send out syncookies when the syn backlog queue of a socket "
           "overflows.",
           "Documentation/networking/ip-sysctl.rst: tcp_syncookies, tcp_max_syn_backlog",
           "Keep tcp_syncookies=1; raise the backlog; if it is a flood, filter upstream."),
        _c(_T, "firewall_drop", "A firewall drops the packets",
           "A DROP rule discards the SYNs (kfree_skb reason NETFILTER_DROP on the host that "
           "drops) or the replies; the client retransmits and gives up after tcp_syn_retries "
           "(about 130 s) with no RST and no ICMP.",
           "Unanswered SYNs are retransmitted tcp_syn_retries times before connect() fails "
           "with ETIMEDOUT.",
           "Documentation/networking/ip-sysctl.rst: tcp_syn_retries; "
           "net/ipv4/tcp_timer.c tcp_write_timeout()",
           "Check firewall and security-group rules on the path and on the server."),
        _c(_T, "retransmits_exhausted", "Data was never acknowledged: tcp_retries2 ran out",
           "An established connection whose data is not acknowledged retransmits with "
           "exponential backoff until tcp_retries2 (15: at least 924.6 s) or TCP_USER_TIMEOUT, "
           "then fails with ETIMEDOUT without a RST. TCPAbortOnTimeout counts it, but "
           "tcp_write_err() counts there every connection a timer gives up: connect() "
           "attempts out of tcp_syn_retries (SYN_SENT) and keepalive too.",
           "tcp_retries2: how many times to retry before killing an alive TCP connection "
           "(default 15, a hypothetical timeout of 924.6 s).",
           "Documentation/networking/ip-sysctl.rst: tcp_retries2; net/ipv4/tcp_timer.c "
           "tcp_write_timeout()",
           "The peer or the path went away while data was in flight: check the peer and the "
           "path (retransmits by peer: `netdiag probe retrans`); bound the wait with "
           "TCP_USER_TIMEOUT in the application."),
        _c(_T, "keepalive_expiry", "Keepalive probes went unanswered",
           "On an idle connection with SO_KEEPALIVE, tcp_keepalive_timer() gives up after "
           "tcp_keepalive_probes unanswered probes (TCPAbortOnTimeout, a RST with reason "
           "TCP_KEEPALIVE_TIMEOUT) and the next read returns ETIMEDOUT.",
           "Keepalive: after tcp_keepalive_time idle, tcp_keepalive_probes probes "
           "tcp_keepalive_intvl apart; then the connection is declared dead.",
           "Documentation/networking/ip-sysctl.rst: tcp_keepalive_*; tcp(7)",
           "The peer or a NAT/firewall state on the path vanished while idle."),
        _c(_T, "app_timeout", "The application's own timeout fired first",
           "Read or connect timeouts set by the application (SO_RCVTIMEO returns EAGAIN, "
           "library deadlines) fire while the kernel still waits: no kernel counter moves.",
           "SO_RCVTIMEO / SO_SNDTIMEO: timeouts after which a blocked call returns EAGAIN or "
           "EINPROGRESS (connect).",
           "socket(7): SO_RCVTIMEO, SO_SNDTIMEO",
           "Compare the application's timeout with what the server needs; look at the server "
           "side (slow handler, full queues)."),
    ),
    ("drops", "retrans", "resets", "errors"),
)

_A = "eaddrnotavail"
EADDRNOTAVAIL = Symptom(
    "EADDRNOTAVAIL", "cannot assign requested address", ("EADDRNOTAVAIL",),
    ("ports", "port-exhaustion", "addrnotavail"),
    ("cannot assign requested address", "eaddrnotavail", "address not available"),
    "connect() (no free local port toward the destination), bind() (an address not on the "
    "host)",
    (
        _c(_A, "port_exhaustion", "No free source port toward that destination",
           "connect() needs a local port that is free for the four-tuple (source IP, "
           "destination IP, destination port); __inet_hash_connect() scans "
           "ip_local_port_range (both parities) and fails with EADDRNOTAVAIL when every port "
           "is in use or in TIME_WAIT that cannot be reused. A TIME_WAIT port comes back "
           "after 60 s or, where tcp_tw_reuse applies to the destination (1: any; 2, the "
           "default: loopback only) and timestamps are on, once older than "
           "tcp_tw_reuse_delay (1 s): connections opened faster than the usable ports per "
           "delay fail even then.",
           "ip_local_port_range defines the local port range used by TCP and UDP to choose "
           "the local port.",
           "Documentation/networking/ip-sysctl.rst: ip_local_port_range, tcp_tw_reuse; "
           "net/ipv4/inet_hashtables.c __inet_hash_connect()",
           "Reuse connections (pooling, keep-alive) and spread bursts out; where tcp_tw_reuse "
           "does not already apply to the destination (2 covers loopback only), "
           "tcp_tw_reuse=1 lets connect() take TIME_WAIT ports older than tcp_tw_reuse_delay; "
           "widen ip_local_port_range; spread over more source IPs or destination ports."),
        _c(_A, "bind_before_connect", "bind() before connect() holds ports for every destination",
           "A socket that binds a source address before connect() without "
           "IP_BIND_ADDRESS_NO_PORT reserves a port for all destinations; such ports are "
           "skipped by every other connect(), so the range runs out far sooner.",
           "IP_BIND_ADDRESS_NO_PORT: inform the kernel not to reserve an ephemeral port when "
           "using bind() with a port number of 0; the port is chosen at connect() time.",
           "ip(7): IP_BIND_ADDRESS_NO_PORT; net/ipv4/inet_hashtables.c",
           "Set IP_BIND_ADDRESS_NO_PORT before bind() when choosing a source address."),
        _c(_A, "nonlocal_address", "bind() to an address the host does not have",
           "bind() to an IP not configured on the host fails with EADDRNOTAVAIL unless "
           "IP_FREEBIND, IP_TRANSPARENT or ip_nonlocal_bind allows it.",
           "ip_nonlocal_bind: allows processes to bind() to non-local IP addresses.",
           "Documentation/networking/ip-sysctl.rst: ip_nonlocal_bind; net/ipv4/af_inet.c "
           "inet_bind_sk()",
           "Fix the configured source address, or use IP_FREEBIND for an address that comes "
           "up later."),
    ),
    ("errors",),
)

_U = "eaddrinuse"
EADDRINUSE = Symptom(
    "EADDRINUSE", "address already in use", ("EADDRINUSE",), ("inuse", "addrinuse"),
    ("address already in use", "eaddrinuse"),
    "bind() (listen() for an unbound socket); never connect() itself",
    (
        _c(_U, "listener_holds_port", "Another socket already listens on the port",
           "bind() finds the port held by a listening socket without SO_REUSEPORT on both "
           "sides (or of another user).",
           "Only one socket may bind an address:port unless both set SO_REUSEPORT (same "
           "effective UID).",
           "socket(7): SO_REUSEADDR, SO_REUSEPORT; net/ipv4/inet_connection_sock.c "
           "inet_csk_get_port()",
           "Stop the process that holds the port (the evidence names it), or use another "
           "port."),
        _c(_U, "time_wait_blocks_bind", "TIME_WAIT sockets still hold the port",
           "A restart binds a port whose old connections are in TIME_WAIT (60 s); without "
           "SO_REUSEADDR on both the new and the old socket the bind fails.",
           "SO_REUSEADDR: allow reuse of local addresses (Linux: a port in TIME_WAIT).",
           "socket(7): SO_REUSEADDR; include/net/tcp.h TCP_TIMEWAIT_LEN",
           "Set SO_REUSEADDR on the listening socket before bind() (all common servers do)."),
        _c(_U, "outgoing_took_port", "An outgoing connection took the port (it is in the "
                                     "ephemeral range)",
           "The service's port lies inside ip_local_port_range and is not reserved: while the "
           "service was down, connect() picked it as a source port.",
           "ip_local_reserved_ports: ports not used by automatic port assignment.",
           "Documentation/networking/ip-sysctl.rst: ip_local_reserved_ports",
           "Add the port to net.ipv4.ip_local_reserved_ports or move the service below the "
           "ephemeral range."),
        _c(_U, "bind_zero_exhaustion", "bind(0) found no free port",
           "bind() with port 0 needs a port free for every destination (odd ports first); "
           "with the range full it fails with EADDRINUSE.",
           "ip_local_port_range: the range bind(0) and connect() choose from.",
           "Documentation/networking/ip-sysctl.rst: ip_local_port_range, ip_autobind_reuse",
           "Use IP_BIND_ADDRESS_NO_PORT, or widen the range."),
    ),
    ("errors",),
)

_M = "emfile"
EMFILE = Symptom(
    "EMFILE", "too many open files", ("EMFILE", "ENFILE"), ("fds", "files", "nofile"),
    ("too many open files", "emfile", "enfile", "too many open files in system"),
    "accept(), socket(), open() (EMFILE: the process's RLIMIT_NOFILE; ENFILE: fs.file-max)",
    (
        _c(_M, "process_limit", "A process is at its RLIMIT_NOFILE",
           "accept() reserves a descriptor before taking a connection; at RLIMIT_NOFILE it "
           "fails with EMFILE and the connection stays queued, so the accept queue fills and "
           "an event loop spins on a readable listener it cannot accept from.",
           "RLIMIT_NOFILE: one greater than the maximum file descriptor number that can be "
           "opened by this process; exceeding it yields EMFILE.",
           "getrlimit(2); accept(2); fs/file.c get_unused_fd_flags()",
           "Raise the process's limit (LimitNOFILE= in its systemd unit, ulimit -n), and "
           "check for descriptor leaks (CLOSE_WAIT sockets that are never closed)."),
        _c(_M, "system_limit", "The host is at fs.file-max (ENFILE)",
           "alloc_empty_file() fails when the system-wide number of open files reaches "
           "fs.file-max: ENFILE for every process.",
           "file-max: the maximum number of file handles the kernel will allocate.",
           "Documentation/admin-guide/sysctl/fs.rst: file-max, file-nr",
           "Raise fs.file-max, and find the process that holds most descriptors."),
        _c(_M, "leak_close_wait", "Sockets the application never closes (a descriptor leak)",
           "Each CLOSE_WAIT socket keeps its descriptor until the application calls close(); "
           "a leak grows until RLIMIT_NOFILE.",
           "CLOSE-WAIT: the remote side has shut down; the local application has not closed.",
           "RFC 9293 §3.3.2; tcp(7)",
           "Fix the application's close() paths (closewait.leak names the process and port)."),
    ),
    ("errors",),
)

_P = "epipe"
EPIPE = Symptom(
    "EPIPE", "broken pipe", ("EPIPE",), ("pipe", "sigpipe"),
    ("broken pipe", "epipe", "sigpipe"),
    "write/send (after the peer closed or reset; SIGPIPE unless MSG_NOSIGNAL)",
    (
        _c(_P, "write_after_peer_close", "Writing to a connection the peer already closed",
           "The peer closed (we are in CLOSE_WAIT) and its socket is gone or in TIME_WAIT: our "
           "write draws a RST (reason TCP_TIMEWAIT_SOCKET or NO_SOCKET on the peer); "
           "tcp_reset() in CLOSE_WAIT sets EPIPE, so the next write fails.",
           "A reset received in CLOSE-WAIT reports EPIPE to the writer (tcp_reset()).",
           "net/ipv4/tcp_input.c tcp_reset(); net/ipv4/tcp.c tcp_sendmsg_locked()",
           "Handle read() == 0 (end of file) before writing more; pooled clients must not "
           "reuse connections the server closed (check them, or retry idempotent requests)."),
        _c(_P, "write_after_reset", "Writing after a reset was already reported",
           "After a RST the first call returns ECONNRESET; later writes return EPIPE (and "
           "raise SIGPIPE, which kills a process that does not ignore it).",
           "sk_stream_error(): EPIPE and SIGPIPE unless MSG_NOSIGNAL.",
           "net/core/stream.c sk_stream_error(); send(2): MSG_NOSIGNAL",
           "Treat the first ECONNRESET as the end of the connection; ignore SIGPIPE or use "
           "MSG_NOSIGNAL, so one dead peer cannot kill the process."),
        _c(_P, "own_shutdown", "Writing after the application's own shutdown(SHUT_WR)",
           "After shutdown(SHUT_WR) any write fails with EPIPE.",
           "shutdown(2): further transmissions are disallowed.",
           "shutdown(2); net/ipv4/tcp.c tcp_sendmsg_locked()",
           "A bug in the application's close sequence."),
    ),
    ("errors", "resets"),
)

_H = "hang"
HANG = Symptom(
    "hang", "a read that never returns; a peer that vanished", (), ("hang", "hung", "stuck"),
    ("hang", "hangs", "hangs forever", "stuck", "no response", "never returns"),
    "read/recv that blocks, a request that never completes",
    (
        _c(_H, "idle_no_keepalive", "Idle connections without keepalive never notice a dead "
                                    "peer",
           "With no data to send and SO_KEEPALIVE off, no timer runs: a peer that vanished "
           "(power loss, a NAT or firewall that dropped its state) is never detected.",
           "Keepalive is off unless the application sets SO_KEEPALIVE.",
           "tcp(7); Documentation/networking/ip-sysctl.rst: tcp_keepalive_time",
           "Enable SO_KEEPALIVE with a short TCP_KEEPIDLE, or an application-level timeout or "
           "heartbeat."),
        _c(_H, "keepalive_defaults", "Keepalive at the defaults takes 2 h 11 min",
           "With the sysctl defaults a dead peer is declared after 7200 + 75 × 9 = 7875 s.",
           "tcp_keepalive_time 7200, tcp_keepalive_intvl 75, tcp_keepalive_probes 9.",
           "Documentation/networking/ip-sysctl.rst: tcp_keepalive_*",
           "Shorten TCP_KEEPIDLE/INTVL/CNT per socket or in the sysctls."),
        _c(_H, "unacked_retransmitting", "Our data is unacknowledged and retransmitting",
           "Data in flight is retransmitted with backoff for up to tcp_retries2 (about 15 "
           "minutes) before ETIMEDOUT; the connection hangs meanwhile.",
           "tcp_retries2: default 15, at least 924.6 s.",
           "Documentation/networking/ip-sysctl.rst: tcp_retries2",
           "Bound the wait with TCP_USER_TIMEOUT; look at the peer and the path."),
        _c(_H, "zero_window", "The peer advertises a zero window (it stopped reading)",
           "The peer's receive buffer is full because its application does not read: we send "
           "window probes (persist timer) forever while they are answered.",
           "Zero-window probing continues while the peer acknowledges (RFC 1122 4.2.2.17).",
           "RFC 1122 §4.2.2.17; net/ipv4/tcp_timer.c tcp_probe_timer()",
           "Fix the reader on the peer; bound the wait with TCP_USER_TIMEOUT."),
        _c(_H, "never_accepted", "Connected, but the server never accepts",
           "With the accept queue full and tcp_abort_on_overflow=0 the client's handshake "
           "looks complete while the server drops its ACK: requests sit unanswered until the "
           "request expires (about 63 s) and a RST arrives.",
           "A listener's accept queue holds at most its backlog + 1 connections.",
           "listen(2); net/ipv4/tcp_minisocks.c tcp_check_req()",
           "Treat the full accept queue (backlog.accept_queue_full names the listener and "
           "its owners)."),
        _c(_H, "unread_data", "Data waits in a socket nobody reads",
           "An event loop that missed an edge (EPOLLET) or never re-armed EPOLLONESHOT leaves "
           "data in Recv-Q; the peer waits for an answer.",
           "Edge-triggered epoll reports only new arrivals: unread data raises no new event.",
           "epoll(7): EPOLLET, EPOLLONESHOT",
           "Find the process that owns the socket and why it does not read."),
    ),
    ("retrans", "resets"),
)

_S = "slow"
SLOW = Symptom(
    "slow", "a transfer that crawls; high latency", (), ("slow", "latency", "throughput"),
    ("slow", "slow transfer", "high latency", "low throughput", "crawls"),
    "any: the calls succeed, late",
    (
        _c(_S, "receive_window", "The receiver's window limits the flow",
           "The sender waits for window (tcpi_rwnd_limited): the receiver's buffer is at its "
           "maximum (tcp_rmem[2], or a size the application fixed), or its application reads "
           "slowly.",
           "A connection keeps at most one receive window in flight: throughput <= window / "
           "RTT.",
           "Documentation/networking/ip-sysctl.rst: tcp_rmem, tcp_moderate_rcvbuf; "
           "include/uapi/linux/tcp.h tcpi_rwnd_limited",
           "See buffers: raise tcp_rmem[2] for long fat paths, stop fixing SO_RCVBUF, or fix "
           "the slow reader."),
        _c(_S, "send_buffer", "The sender's buffer limits the flow",
           "The application could write more but the send buffer is full "
           "(tcpi_sndbuf_limited) at tcp_wmem[2] or a fixed SO_SNDBUF.",
           "tcp_wmem[2]: the maximum send buffer autotuning may reach.",
           "Documentation/networking/ip-sysctl.rst: tcp_wmem",
           "Raise tcp_wmem[2] or stop fixing SO_SNDBUF."),
        _c(_S, "application_limited", "The application itself is the limit",
           "The flow is application-limited (busy time small over a window; "
           "tcpi_delivery_rate_app_limited in a rate sample): the sender has nothing queued; "
           "the network and buffers are not the bottleneck. A sender that paces or caps its "
           "rate is application-limited between bursts and looks unlimited within one: one "
           "sample does not decide.",
           "delivery_rate_app_limited: the latest rate sample was limited by the application.",
           "include/uapi/linux/tcp.h; net/ipv4/tcp_rate.c",
           "Profile the application (request pattern, CPU, locks); no sysctl helps."),
        _c(_S, "loss_retransmits", "Packets are lost and retransmitted",
           "Retransmits (TcpRetransSegs, TCPTimeouts) stall the flow: congestion control backs "
           "off and timeouts add seconds.",
           "RetransSegs counts segments retransmitted.",
           "Documentation/networking/snmp_counter.rst; net/ipv4/tcp_output.c",
           "Find the peers with retransmits (`netdiag probe retrans`) and the lossy path or "
           "overloaded receiver."),
        _c(_S, "receiver_drops", "The receive path drops packets (queues, memory, softirq)",
           "Receive-queue drops and prunes (TCPRcvQDrop, PruneCalled), per-CPU backlog drops "
           "(softnet dropped) or NIC ring overruns force retransmits.",
           "netdev_max_backlog, netdev_budget; tcp_rmem.",
           "Documentation/admin-guide/sysctl/net.rst: netdev_max_backlog, netdev_budget",
           "See the buffers and softirq findings."),
        _c(_S, "setup_delays", "Connection setup waits on full listen queues",
           "SYNs dropped by a full accept or SYN queue are retried after 1, 2, 4 s: requests "
           "take seconds longer.",
           "ListenOverflows / TCPReqQFullDrop count the dropped connection requests.",
           "Documentation/networking/snmp_counter.rst",
           "Treat the full accept queue or SYN queue (backlog findings)."),
    ),
    ("retrans", "drops"),
)

SYMPTOMS: tuple[Symptom, ...] = (ECONNRESET, ECONNREFUSED, ETIMEDOUT, EADDRNOTAVAIL,
                                 EADDRINUSE, EMFILE, EPIPE, HANG, SLOW)
CAUSES: dict[str, CauseSpec] = {c.id: c for s in SYMPTOMS for c in s.causes}


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().replace("_", " ").split())


def find(text: str) -> Symptom | None:
    """The symptom a user means: an errno name or number, a word, or a message as
    applications print it ("read: connection reset by peer")."""
    raw = text.strip()
    if len(raw) > 300:
        return None
    norm = _norm(raw)
    if raw.lstrip("-").isdigit():  # an errno number, as some logs print it
        name = _errno.errorcode.get(abs(int(raw)))
        norm = _norm(name) if name else norm
    for s in SYMPTOMS:
        keys = {_norm(k) for k in (s.name, *s.errnos, *s.words)}
        if norm in keys:
            return s
    for s in SYMPTOMS:  # a message, possibly inside a longer log line
        for msg in sorted(s.messages, key=len, reverse=True):
            if _norm(msg) in norm:
                return s
    for s in SYMPTOMS:  # strerror() of its errnos, in the C library's words
        for name in s.errnos:
            number = getattr(_errno, name, None)
            if number is not None and _norm(os.strerror(number)) in norm:
                return s
    return None


def nearest(text: str) -> list[str]:
    names = [s.name for s in SYMPTOMS] + [w for s in SYMPTOMS for w in s.words]
    return difflib.get_close_matches(text.strip(), names, n=3, cutoff=0.5)
