"""Aggregate the socket table as it streams by: counts and bounded top-N, never a socket list.

Both socket sources (netlink sock_diag and /proc/net/tcp) feed `CensusBuilder.add()`. The
listeners are fed first (each source dumps LISTEN before the rest), so that accepted
connections on a listening port can be told from outgoing ones while streaming.
"""

from __future__ import annotations

from netdiag.facts import (
    CLOSE_WAIT,
    LISTEN,
    TCP_STATES,
    TIME_WAIT,
    TIMER_NAMES,
    Census,
    Listener,
    TopCounts,
    format_address,
)

# Distinct keys kept per grouping before pruning to the heaviest. Enough to be exact on all
# but the largest hosts; beyond it counts become approximate and say so.
TOP_CAPACITY = 2048
CLOSE_WAIT_INODE_CAP = 200_000


class TopCounter:
    """Lossy counting: keep at most 2*capacity keys, prune to the heaviest `capacity`."""

    __slots__ = ("counts", "capacity", "pruned", "distinct")

    def __init__(self, capacity: int = TOP_CAPACITY) -> None:
        self.counts: dict = {}
        self.capacity = capacity
        self.pruned = 0
        self.distinct = 0

    def maybe_prune(self) -> None:
        counts = self.counts
        if len(counts) <= 2 * self.capacity:
            return
        keep = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        self.distinct += len(keep) - self.capacity
        self.pruned += sum(v for _, v in keep[self.capacity :])
        self.counts = dict(keep[: self.capacity])

    def result(self, limit: int, render=None) -> TopCounts:
        items = sorted(self.counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]
        if render is not None:
            items = [(render(k), v) for k, v in items]
        return TopCounts(
            items=items,
            distinct_seen=self.distinct + len(self.counts),
            pruned=self.pruned,
            approximate=self.pruned > 0,
        )


class CensusBuilder:
    """Receives one socket at a time; `finish()` returns the Census.

    `owners` (inode -> pid) enables counting by process; `ephemeral` is ip_local_port_range.
    """

    def __init__(
        self,
        source: str,
        ephemeral: tuple[int, int] | None,
        owners: dict[int, int] | None = None,
        states: set[int] | None = None,
        port: int | None = None,
    ) -> None:
        self.source = source
        self.ephemeral = ephemeral
        self.owners = owners
        self.states = states
        self.port = port
        self.total = 0
        self.state_counts = {2: [0] * 16, 10: [0] * 16}
        self.timer_counts = [0] * 8
        self.listeners: list[Listener] = []
        self.listen_ports: set[int] = set()
        self.local_port = TopCounter()
        self.peer = TopCounter()
        self.process = TopCounter() if owners is not None else None
        self.dest = TopCounter()
        self.dest_tw = TopCounter()
        self.tw_server = TopCounter()
        self.tw_roles = {"client": 0, "server": 0, "other": 0}
        self.cw_port = TopCounter()
        self.cw_unread = 0
        self.cw_eof_unread = 0
        self.cw_inodes: dict[int, int] = {}
        self.cw_truncated = False
        self.skipped_lines = 0
        self.detail = None  # a tcpinfo.DetailBuilder when per-connection detail is wanted
        self._mask: bytearray = bytearray(0)
        self._mask_key: tuple | None = None

    def add(self, family: int, state: int, timer: int, src: bytes, sport: int, dst: bytes,
            dport: int, rq: int, wq: int, inode: int) -> None:
        if self.states is not None and state not in self.states:
            return
        if self.port is not None and sport != self.port and dport != self.port:
            return
        self.total += 1
        self.state_counts[family][state] += 1
        self.timer_counts[timer & 7] += 1
        if state == LISTEN:
            self.listen_ports.add(sport)
            self.listeners.append(
                Listener(family, format_address(family, src), sport, rq, wq, inode)
            )
            if self.process is not None and inode in self.owners:
                c = self.process.counts
                k = (self.owners[inode], state)
                c[k] = c.get(k, 0) + 1
            return
        c = self.peer.counts
        k = (family, dst, state)
        c[k] = c.get(k, 0) + 1
        if self.process is not None and inode:
            pid = self.owners.get(inode)
            if pid is not None:
                c = self.process.counts
                k = (pid, state)
                c[k] = c.get(k, 0) + 1
        eph = self.ephemeral
        outgoing = (
            eph is not None and eph[0] <= sport <= eph[1] and sport not in self.listen_ports
        )
        if outgoing and state != TIME_WAIT:  # outgoing TIME_WAIT: see below
            c = self.dest.counts
            k = (family, src, dst, dport)
            c[k] = c.get(k, 0) + 1
        elif not outgoing:  # outgoing sockets are grouped by destination, not source port
            c = self.local_port.counts
            k = (sport, state)
            c[k] = c.get(k, 0) + 1
        if state == TIME_WAIT:
            if outgoing:  # counted once here; finish() adds these to the destinations
                c = self.dest_tw.counts
                k = (family, src, dst, dport)
                c[k] = c.get(k, 0) + 1
            elif sport in self.listen_ports:
                self.tw_roles["server"] += 1
                c = self.tw_server.counts
                k = (sport, family, dst)
                c[k] = c.get(k, 0) + 1
            else:
                self.tw_roles["other"] += 1
        elif state == CLOSE_WAIT:
            c = self.cw_port.counts
            c[sport] = c.get(sport, 0) + 1
            if rq == 1:
                self.cw_eof_unread += 1
            elif rq > 1:
                self.cw_unread += 1
            if inode:
                if len(self.cw_inodes) < CLOSE_WAIT_INODE_CAP:
                    self.cw_inodes[inode] = sport
                else:
                    self.cw_truncated = True

    def outgoing_mask(self) -> bytearray:
        """mask[raw_port] = 1 when the local port (as sock_diag gives it, network order)
        lies in ip_local_port_range and is not a listening port: an outgoing connection.
        Rebuilt when the listening ports change (they are all known after the first dumps).
        """
        key = (self.ephemeral, len(self.listen_ports))
        if self._mask_key != key:
            mask = bytearray(65536)
            if self.ephemeral is not None:
                lo, hi = self.ephemeral
                listen = self.listen_ports
                for port in range(max(lo, 0), min(hi, 65535) + 1):
                    if port not in listen:
                        mask[((port & 0xFF) << 8) | (port >> 8)] = 1
            self._mask, self._mask_key = mask, key
        return self._mask

    def batch_done(self) -> None:
        """Called by sources every few hundred sockets: keeps the top counters bounded."""
        for counter in (self.local_port, self.peer, self.dest, self.dest_tw, self.tw_server,
                        self.cw_port, self.process):
            if counter is not None:
                counter.maybe_prune()

    def finish(self, top: int = 20) -> Census:
        # Outgoing TIME_WAIT sockets were counted only per destination: fold them into the
        # destination totals and the client role now.
        dest = self.dest.counts
        for k, n in self.dest_tw.counts.items():
            dest[k] = dest.get(k, 0) + n
        self.tw_roles["client"] = sum(self.dest_tw.counts.values()) + self.dest_tw.pruned
        self.batch_done()
        state_name = TCP_STATES.get
        census = Census(source=self.source, total=self.total)
        merged = [a + b for a, b in zip(self.state_counts[2], self.state_counts[10])]
        census.by_state = {TCP_STATES[s]: n for s, n in enumerate(merged)
                           if n and s in TCP_STATES}
        for fam, name in ((2, "ipv4"), (10, "ipv6")):
            counts = {TCP_STATES[s]: n for s, n in enumerate(self.state_counts[fam])
                      if n and s in TCP_STATES}
            if counts:
                census.by_family_state[name] = counts
                census.by_family[name] = sum(counts.values())
        census.timers = {TIMER_NAMES.get(t, "unknown"): n
                         for t, n in enumerate(self.timer_counts) if n}
        census.listeners = sorted(self.listeners, key=lambda lst: (lst.port, lst.family))
        census.by_local_port = self.local_port.result(
            top * 4, lambda k: (k[0], state_name(k[1], str(k[1]))))
        census.by_peer = self.peer.result(
            top * 4, lambda k: (format_address(k[0], k[1]), state_name(k[2], str(k[2]))))
        if self.process is not None:
            census.by_process = self.process.result(
                top * 4, lambda k: (k[0], state_name(k[1], str(k[1]))))

        def dest_key(k):
            return (format_address(k[0], k[1]), format_address(k[0], k[2]), k[3])

        census.by_destination = self.dest.result(top, dest_key)
        census.timewait_by_destination = self.dest_tw.result(top, dest_key)
        census.timewait_server_side = self.tw_server.result(
            top, lambda k: (k[0], format_address(k[1], k[2])))
        census.timewait_roles = dict(self.tw_roles)
        census.close_wait_by_port = self.cw_port.result(top)
        census.close_wait_unread = self.cw_unread
        census.close_wait_eof_unread = self.cw_eof_unread
        census.close_wait_inodes = self.cw_inodes
        census.close_wait_inodes_truncated = self.cw_truncated
        census.ephemeral_range = self.ephemeral
        census.skipped_lines = self.skipped_lines
        return census
