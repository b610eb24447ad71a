"""The socket-programming concepts behind the symptoms, for `netdiag explain CONCEPT`.

Each entry is short and tied to what netdiag can observe from outside the application: a
concept an on-call engineer meets in a log line or a code review, the kernel behaviour behind
it, and where netdiag shows its traces. Sources are man pages and kernel files, named in each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    name: str
    title: str
    text: str
    observe: str  # what netdiag shows of it, and how
    source: str
    aliases: tuple[str, ...] = ()


CONCEPTS: tuple[Concept, ...] = (
    Concept(
        "io-models", "The five I/O models",
        "Reading from a socket has two phases: waiting until data has arrived, then copying it "
        "from the kernel to the process. Blocking I/O sleeps through both. Non-blocking I/O "
        "returns EAGAIN (EWOULDBLOCK) at once while there is nothing, so the process must poll. "
        "I/O multiplexing (select, poll, epoll) sleeps on many sockets at once and then does "
        "the copy with an ordinary read. Signal-driven I/O (O_ASYNC, SIGIO) sends a signal when "
        "a socket becomes ready; the copy is still the process's job. Asynchronous I/O (POSIX "
        "aio, io_uring) asks the kernel to do both phases and reports completion. The first "
        "four are synchronous: the process itself performs the copy.",
        "A process blocked in phase one shows in /proc/PID/wchan and stat state S; data "
        "waiting for a reader shows as Recv-Q on its socket (`netdiag sockets`, ss -tn). "
        "`netdiag probe errors` counts EAGAIN and other errors per process.",
        "socket(7); recv(2); select(2); epoll(7); fcntl(2) O_ASYNC; io_uring(7)",
        ("io", "blocking", "nonblocking", "non-blocking", "io-model", "aio", "signal-driven")),
    Concept(
        "reactor-proactor", "Reactor and proactor",
        "A reactor is an event loop that waits for readiness (this socket can be read, that one "
        "written) and calls a handler that does the I/O itself: it is built on multiplexing "
        "(epoll). A proactor starts operations and is told when they have completed (the data "
        "is already in the buffer): it needs asynchronous I/O, such as Windows IOCP or "
        "io_uring. Most Linux servers (nginx, redis, Netty, libuv, Go's netpoller) are "
        "reactors, because epoll was the efficient primitive Linux offered for sockets.",
        "A reactor's single thread at 100% CPU stops accepting and reading: full accept "
        "queues and growing Recv-Q (`netdiag backlog`, `netdiag buffers`) are the traces.",
        "epoll(7); io_uring(7)",
        ("reactor", "proactor", "event-loop")),
    Concept(
        "select-poll-epoll", "select, poll and epoll",
        "select(2) takes bit sets limited to FD_SETSIZE (1024) descriptors and rescans them on "
        "every call; poll(2) takes an array without that limit but still passes and scans the "
        "whole set each time, so both cost O(n) per call. epoll(7) registers interest once "
        "(epoll_ctl) and keeps a ready list that the socket's wake-up callback fills, so "
        "epoll_wait costs O(ready). Each socket wait queue entry of an epoll instance is a "
        "callback, which is why one event can wake several epoll instances (see "
        "epollexclusive).",
        "With many idle connections a select/poll loop burns CPU in the kernel; epoll does "
        "not. `netdiag probe wakeups` counts wake-ups per accepted connection.",
        "select(2); poll(2); epoll(7); fs/eventpoll.c",
        ("select", "poll", "epoll")),
    Concept(
        "level-edge-triggered", "Level-triggered and edge-triggered epoll",
        "Level-triggered (the default) reports a socket as long as it is readable: a handler "
        "that reads only part of the data is told again at the next epoll_wait. Edge-triggered "
        "(EPOLLET) reports only transitions, when new data arrives: the handler must read until "
        "read() returns EAGAIN, or the rest stays in the socket and no further event comes "
        "until more data arrives. That missed edge is visible from outside: an ESTABLISHED "
        "socket whose Recv-Q stays above zero while its process sleeps in epoll_wait, and a "
        "peer that stalls because the receive window fills (rwnd limited).",
        "`netdiag sockets` and `netdiag buffers` show Recv-Q per connection; a Recv-Q that "
        "does not drain between two samples (--interval) with an idle reader is the sign. "
        "On the sender, tcp_info rwnd_limited grows.",
        "epoll(7) (\"Level-triggered and edge-triggered\", the EPOLLET example)",
        ("edge-triggered", "level-triggered", "epollet", "et", "lt", "missed-edge")),
    Concept(
        "epolloneshot", "EPOLLONESHOT",
        "With EPOLLONESHOT an fd reports one event and is then disabled in that epoll instance "
        "until the handler re-arms it with EPOLL_CTL_MOD. Thread pools use it so that two "
        "threads never handle the same connection at once. A handler that forgets to re-arm "
        "(an error path, an early return) leaves the connection deaf: data waits in Recv-Q and "
        "the peer eventually times out.",
        "The same trace as a missed edge: Recv-Q above zero that never drains on a connection "
        "whose process is otherwise alive (`netdiag sockets`, --interval).",
        "epoll_ctl(2): EPOLLONESHOT",
        ("oneshot", "epoll-oneshot")),
    Concept(
        "epollexclusive", "EPOLLEXCLUSIVE and the thundering herd",
        "When several processes or threads wait for the same listening socket, one new "
        "connection can wake all of them, and all but one find nothing (accept returns EAGAIN): "
        "the thundering herd. Blocking accept() has woken only one waiter for a long time "
        "(exclusive wait). With epoll, each epoll instance that watches the listener is woken; "
        "EPOLLEXCLUSIVE (Linux 4.5) makes the instance's entry exclusive, so one or more, not "
        "all, wake. Other fixes: SO_REUSEPORT (a listening socket per worker, the kernel "
        "spreads connections), or an accept mutex (nginx accept_mutex).",
        "`netdiag probe wakeups` counts wake-ups and accept() results per listener and thread; "
        "wakeups.thundering_herd names the port, the processes and the fix.",
        "epoll_ctl(2): EPOLLEXCLUSIVE; fs/eventpoll.c ep_poll_callback(); "
        "net/ipv4/inet_connection_sock.c inet_csk_wait_for_connect()",
        ("thundering-herd", "herd", "epoll-exclusive", "accept-mutex")),
    Concept(
        "so-reuseaddr", "SO_REUSEADDR",
        "On Linux, SO_REUSEADDR lets a TCP socket bind() an address:port that sockets in "
        "TIME_WAIT still hold, provided the socket that left them had set it too; it does not "
        "let two sockets listen on the same port. Servers set it so that a restart does not "
        "fail with EADDRINUSE for the 60 s that TIME_WAIT lasts.",
        "`netdiag why EADDRINUSE --port P` shows what holds the port: a listener (and its "
        "processes) or TIME_WAIT sockets.",
        "socket(7): SO_REUSEADDR; ip(7)",
        ("reuseaddr",)),
    Concept(
        "so-reuseport", "SO_REUSEPORT",
        "SO_REUSEPORT (Linux 3.9) lets several sockets of the same user bind the same "
        "address:port. For TCP listeners the kernel hashes each new connection's four-tuple "
        "to one member of the group, so each worker accepts from its own queue and there is no "
        "herd. The hash ignores queue length: one worker that stops accepting keeps receiving "
        "its share, its accept queue fills and those clients' SYNs are dropped while the other "
        "workers idle. When a member closes, its queue's pending connections are lost unless "
        "they are migrated (tcp_migrate_req).",
        "`netdiag backlog` shows each member of a group as its own listener row with its owner "
        "and queue, and says when one of them is not accepting.",
        "socket(7): SO_REUSEPORT; net/core/sock_reuseport.c; "
        "Documentation/networking/ip-sysctl.rst: tcp_migrate_req",
        ("reuseport",)),
    Concept(
        "graceful-restart", "Graceful restart: handing the listening socket over",
        "A server can restart without refusing connections by passing its listening socket to "
        "the new process: fork and exec with the fd inherited (nginx's binary upgrade with "
        "SIGUSR2, systemd socket activation, an fd sent over a Unix socket with SCM_RIGHTS). It "
        "is still one socket with one accept queue; for a while the old and the new process "
        "both hold it. Closing a listener with connections still queued resets them, which is "
        "why the old process must stop accepting and drain, not just exit.",
        "netdiag reports every process holding a socket: a listener held by two processes "
        "during an upgrade shows both, and advice about restarting names the whole set.",
        "unix(7): SCM_RIGHTS; sd_listen_fds(3); nginx \"Changing configuration / Upgrading "
        "executable on the fly\"",
        ("socket-handover", "hot-restart", "fd-passing", "inherited-listener")),
    Concept(
        "so-linger", "SO_LINGER",
        "SO_LINGER {on, t} makes close() wait up to t seconds for unsent data to be "
        "acknowledged. With {on, 0} close() aborts instead: the kernel sends a RST, drops "
        "unsent data and skips TIME_WAIT. The peer's next read or write fails with ECONNRESET "
        "('connection reset by peer'). Closing a socket that still has unread received data "
        "also sends a RST, with or without SO_LINGER.",
        "`netdiag probe resets` shows RSTs this host sends by reason: TCP_STATE for a "
        "linger-0 close, TCP_ABORT_ON_CLOSE for a close with unread data (kernels with "
        "reasons); TcpExt.TCPAbortOnData and TCPAbortOnClose count them.",
        "socket(7): SO_LINGER; net/ipv4/tcp.c __tcp_close(), tcp_disconnect(); "
        "include/net/rstreason.h",
        ("linger", "rst-on-close")),
    Concept(
        "message-framing", "Message framing over a byte stream",
        "TCP delivers a stream of bytes, not messages: one send() may arrive in several "
        "read()s, and several send()s may arrive in one (the 'sticky packet' and 'half packet' "
        "of the talk). Applications must frame messages themselves: a length prefix, a "
        "delimiter (HTTP/1 header lines), or a fixed size, and loop until a whole message is "
        "read. UDP keeps datagram boundaries and has no such problem, at the price of loss and "
        "reordering.",
        "Nothing in the kernel marks message boundaries, so netdiag cannot see framing bugs "
        "directly; their traces are a peer waiting for bytes that never come (idle "
        "connections, read timeouts) or a reader that consumes garbage and closes (RSTs).",
        "tcp(7); RFC 9293 §3.8.5 (\"the data stream\"); udp(7)",
        ("framing", "sticky-packet", "half-packet", "byte-stream", "packet-splicing")),
    Concept(
        "half-close", "shutdown() and half-close",
        "shutdown(SHUT_WR) sends a FIN but keeps reading: the peer's read() returns 0 (end of "
        "file) while it may still send. A socket whose peer sent FIN is in CLOSE_WAIT until "
        "the application calls close(): CLOSE_WAIT sockets that pile up are an application "
        "that never closes after read() returned 0. Writing after one's own SHUT_WR fails "
        "with EPIPE. shutdown() does not make a close with unread received data graceful: "
        "close() still sends a RST (__tcp_close()). The graceful close is shutdown(SHUT_WR), "
        "read until read() returns 0, then close().",
        "`netdiag closewait` lists CLOSE_WAIT sockets per process and local port, and whether "
        "the end of file was even read (Recv-Q 1).",
        "shutdown(2); tcp(7); RFC 9293 §3.6",
        ("shutdown", "close-wait", "eof")),
    Concept(
        "nonblocking-connect", "Non-blocking connect() and EINPROGRESS",
        "A non-blocking connect() returns -1 with EINPROGRESS while the handshake runs. The "
        "socket becomes writable when it finishes; the outcome is read with "
        "getsockopt(SO_ERROR): 0, or ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH... Code that treats "
        "writability as success without SO_ERROR reports failures late, as a broken pipe or "
        "reset on the first write.",
        "`netdiag probe errors` counts connect() results per destination, EINPROGRESS "
        "included; `netdiag probe states` counts SYN_SENT -> ESTABLISHED or CLOSE outcomes.",
        "connect(2): EINPROGRESS; socket(7): SO_ERROR",
        ("einprogress", "async-connect")),
    Concept(
        "errno", "What read, write, accept and connect return",
        "read() > 0: bytes; 0: the peer closed (end of file); -1 with errno: EAGAIN or "
        "EWOULDBLOCK (non-blocking, nothing yet: wait for the next event), EINTR (a signal "
        "interrupted the call: retry), ECONNRESET (a RST arrived: 'connection reset by peer'), "
        "ETIMEDOUT (retransmissions or keepalive gave up). write(): EPIPE after the peer reset "
        "or after one's own shutdown (plus SIGPIPE, which kills a process that does not ignore "
        "it). connect(): ECONNREFUSED (RST to the SYN: nothing listens), ETIMEDOUT (no answer "
        "to the SYNs), EADDRNOTAVAIL (no free local port toward that destination), "
        "EINPROGRESS (non-blocking, in progress). accept(): EMFILE/ENFILE (out of file "
        "descriptors; the connection stays queued).",
        "`netdiag why SYMPTOM` goes from one of these errors to its kernel causes with "
        "evidence; `netdiag probe errors` counts them per process and destination as they "
        "happen.",
        "read(2); write(2); connect(2); accept(2); errno(3); tcp(7); socket(7)",
        ("errors", "errno-table", "return-values", "eagain", "eintr", "sigpipe")),
    Concept(
        "crashes", "When a process, a server or a router crashes",
        "When a process exits or is killed, the kernel closes its sockets: a FIN for those "
        "with nothing unread, a RST for those with unread data (or SO_LINGER 0). The peer "
        "notices at once. When a whole server dies (power, kernel panic) or a router or NAT "
        "on the path loses its state, nothing is sent: the peer notices only when it sends "
        "(retransmissions until tcp_retries2, about 15 minutes, then ETIMEDOUT; or a RST from "
        "the rebooted host: ECONNRESET) or when keepalive probes go unanswered (2 h 11 min "
        "with the defaults). An idle connection without keepalive never notices.",
        "`netdiag keepalive` shows which connections would never notice and how long the "
        "others take; `netdiag why hang` ranks the causes of a read that never returns.",
        "tcp(7): tcp_retries2, tcp_keepalive_*; Documentation/networking/ip-sysctl.rst",
        ("crash", "server-crash", "router-crash", "peer-vanished")),
)

BY_NAME: dict[str, Concept] = {}
for _c in CONCEPTS:
    for _key in (_c.name, *_c.aliases):
        BY_NAME[_key] = _c


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")
