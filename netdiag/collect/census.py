"""Aggregate the socket table as it streams by: counts and bounded top-N, never a socket list.

Both socket sources (netlink sock_diag and /proc/net/tcp) feed `CensusBuilder.add()`, and the
netlink reader also aggregates the common case inline into the same tables (sockets.py). The
listeners are fed first (each source dumps LISTEN before the rest), so that accepted
connections on a listening port can be told from outgoing ones while streaming.

Inside the builder, ports in keys are kept as sock_diag gives them (network byte order, read
as a native u16): the inline path then keys records without converting a port per socket, and
finish() converts each distinct key once. add() takes ports in host order and converts.
"""

from __future__ import annotations

import sys
from typing import Callable

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
TIME_WAIT_MS = 60_000  # TCP_TIMEWAIT_LEN (include/net/tcp.h): a TIME_WAIT socket's timer
YOUNG_CAP = 4 * TOP_CAPACITY  # destinations with young TIME_WAIT kept (then approximate)
CLOSE_WAIT_INODE_CAP = 200_000


LITTLE_ENDIAN = sys.byteorder == "little"


def swap16(port: int) -> int:
    """A 16-bit port between network and host byte order (either way): sock_diag's ports,
    read as native u16, are byte-swapped on a little-endian host and as they are otherwise."""
    return ((port & 0xFF) << 8) | (port >> 8) if LITTLE_ENDIAN else port


def count_index(family: int, state: int, timer: int) -> int:
    """One number per family, state and timer: the class sockets are counted by. Family and
    state come first as the two bytes of inet_diag_msg hold them (read as a native u16),
    so that the inline census makes it in two operations."""
    return (family | state << 8) << 3 | timer & 7


COUNTS_SIZE = count_index(10, 15, 7) + 1


def _network_order(table: bytearray) -> bytearray:
    """A 65536-entry table indexed by host-order port, re-indexed by network-order port:
    swapping the two bytes of the index transposes a 256 x 256 matrix, row by row."""
    if not LITTLE_ENDIAN:
        return table
    out = bytearray(65536)
    for low in range(256):
        out[low << 8:(low + 1) << 8] = table[low::256]
    return out


class TopCounter:
    """Lossy counting: keep at most 2*capacity keys, prune to the heaviest `capacity`.

    With `classed`, a key's first element is a class (count_index()) whose totals must stay
    exact: what pruning drops is added to `dropped[class]`."""

    __slots__ = ("counts", "capacity", "pruned", "distinct", "dropped", "spill")

    def __init__(self, capacity: int = TOP_CAPACITY, classed: bool = False,
                 spill: tuple[TopCounter, Callable] | None = None) -> None:
        self.counts: dict = {}
        self.capacity = capacity
        self.pruned = 0
        self.distinct = 0
        self.dropped: dict[int, int] | None = {} if classed else None
        # (another counter, key function): what pruning drops is added there under a coarser
        # key, so that a grouping summed from this table's keys (peers from destinations)
        # keeps heavy groups whose counts were spread over many light keys.
        self.spill = spill

    def maybe_prune(self) -> None:
        counts = self.counts
        if len(counts) <= 2 * self.capacity:
            return
        keep = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        self.distinct += len(keep) - self.capacity
        self.pruned += sum(v for _, v in keep[self.capacity :])
        dropped = self.dropped
        if dropped is not None:
            for k, v in keep[self.capacity :]:
                dropped[k[0]] = dropped.get(k[0], 0) + v
        if self.spill is not None:
            target, coarse = self.spill
            into = target.counts
            for k, v in keep[self.capacity :]:
                ck = coarse(k)
                into[ck] = into.get(ck, 0) + v
        self.counts = dict(keep[: self.capacity])

    def class_totals(self, into: list[int]) -> None:
        """Add the counts by class (kept and dropped) into a count_index() table."""
        for k, v in self.counts.items():
            into[k[0]] += v
        for c, v in (self.dropped or {}).items():
            into[c] += v

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


def _top(counts: dict, limit: int, pruned: int, distinct: int, render) -> TopCounts:
    """TopCounts of counts summed from a TopCounter's keys (exact unless it was pruned)."""
    items = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    return TopCounts(items=[(render(k), v) for k, v in items],
                     distinct_seen=distinct + len(counts), pruned=pruned,
                     approximate=pruned > 0)


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
        # Sockets by family, state and timer (count_index()), for those in none of the keyed
        # tables below (listeners); the others are counted there, by class, exactly.
        self.counts = [0] * COUNTS_SIZE
        self.listeners: list[Listener] = []
        self.listen_ports: set[int] = set()
        self.local_port = TopCounter()  # (raw sport, state): not outgoing
        # (count_index(), dst): not outgoing (finish() adds those)
        self.peer = TopCounter(2 * TOP_CAPACITY, classed=True)
        self.process = TopCounter() if owners is not None else None  # (pid, state)
        # Outgoing connections, by (count_index(), dport + src + dst as sock_diag lays them
        # out: 34 bytes, the port in network order): their destinations, TIME_WAIT as the
        # client, their peers and their counts by state all come from one count per socket.
        # Peers of the destinations pruning dropped from self.dest, by (class, dst).
        self.dest_peers = TopCounter(2 * TOP_CAPACITY)
        self.dest = TopCounter(2 * TOP_CAPACITY, classed=True,
                               spill=(self.dest_peers, lambda k: (k[0], k[1][18:])))
        self.tw_server = TopCounter()  # (raw sport, family, dst)
        self.tw_roles = {"client": 0, "server": 0, "other": 0}
        self.cw_port = TopCounter()  # host-order sport
        self.cw_unread = 0
        self.cw_eof_unread = 0
        self.cw_inodes: dict[int, int] = {}
        self.cw_no_inode: dict[int, int] = {}
        self.cw_no_inode_keys: set[tuple] = set()
        self.cw_truncated = False
        self.skipped_lines = 0
        # TIME_WAIT toward each destination younger than tcp_tw_reuse_delay, from the
        # socket's timer (expires: ms left of TIME_WAIT's 60 s): the ones connect() cannot
        # take back yet. Counted when young_ms is set and the source gives timers (netlink).
        self.young_ms: int | None = None
        self.young: dict = {}  # (family, ends) -> count, at most YOUNG_CAP keys
        self.young_dropped = 0
        self.ages_seen = False
        self.detail = None  # a tcpinfo.DetailBuilder when per-connection detail is wanted
        self._masks: tuple[bytearray, bytearray] = (bytearray(0), bytearray(0))
        self._mask_key: tuple | None = None

    def young_above(self) -> int | None:
        """A TIME_WAIT socket with more ms left than this is younger than young_ms."""
        return None if self.young_ms is None else TIME_WAIT_MS - self.young_ms

    def count_young(self, family: int, ends: bytes) -> None:
        k = (family, bytes(ends))
        if k in self.young or len(self.young) < YOUNG_CAP:
            self.young[k] = self.young.get(k, 0) + 1
        else:
            self.young_dropped += 1

    def add(self, family: int, state: int, timer: int, src: bytes, sport: int, dst: bytes,
            dport: int, rq: int, wq: int, inode: int, expires: int | None = None) -> None:
        """One socket; ports in host byte order; expires: ms left of its timer, when the
        source gives it."""
        if self.states is not None and state not in self.states:
            return
        if self.port is not None and sport != self.port and dport != self.port:
            return
        if state == LISTEN:
            self.counts[count_index(family, state, timer)] += 1
            self.listen_ports.add(sport)
            self.listeners.append(
                Listener(family, format_address(family, src), sport, rq, wq, inode)
            )
            if self.process is not None and inode in self.owners:
                c = self.process.counts
                k = (self.owners[inode], state)
                c[k] = c.get(k, 0) + 1
            return
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
        if outgoing:  # grouped by destination (its state kept), not by source port
            c = self.dest.counts
            k = (count_index(family, state, timer), dport.to_bytes(2, "big") + src + dst)
            c[k] = c.get(k, 0) + 1
            above = self.young_above()
            if state == TIME_WAIT and expires is not None and above is not None:
                self.ages_seen = True
                if expires > above:
                    self.count_young(family, k[1])
        else:
            c = self.peer.counts
            k = (count_index(family, state, timer), dst)
            c[k] = c.get(k, 0) + 1
            c = self.local_port.counts
            k = (swap16(sport), state)
            c[k] = c.get(k, 0) + 1
            if state == TIME_WAIT:
                if sport in self.listen_ports:
                    self.tw_roles["server"] += 1
                    c = self.tw_server.counts
                    k = (swap16(sport), family, dst)
                    c[k] = c.get(k, 0) + 1
                else:
                    self.tw_roles["other"] += 1
        if state == CLOSE_WAIT:
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
            else:  # no file refers to it: still in a listener's accept queue
                self.cw_no_inode[sport] = self.cw_no_inode.get(sport, 0) + 1
                if len(self.cw_no_inode_keys) < CLOSE_WAIT_INODE_CAP:
                    self.cw_no_inode_keys.add((family, bytes(src), sport, bytes(dst), dport))
                else:
                    self.cw_truncated = True

    def class_counts(self) -> list[int]:
        """Every socket counted, by count_index(): each is in exactly one of these."""
        counts = list(self.counts)
        self.peer.class_totals(counts)
        self.dest.class_totals(counts)
        return counts

    @property
    def total(self) -> int:
        return sum(self.class_counts())

    def port_masks(self) -> tuple[bytearray, bytearray]:
        """Two tables indexed by a local port as sock_diag gives it (network order):
        outgoing[raw] = 1 when the port lies in ip_local_port_range and is not a listening
        port (an outgoing connection); listening[raw] = 1 for a listening port. Rebuilt when
        the listening ports change (they are all known after the first dump)."""
        key = (self.ephemeral, len(self.listen_ports))
        if self._mask_key != key:
            outgoing = bytearray(65536)  # host order first
            if self.ephemeral is not None:
                lo, hi = max(self.ephemeral[0], 0), min(self.ephemeral[1], 65535)
                if lo <= hi:
                    outgoing[lo:hi + 1] = b"\x01" * (hi - lo + 1)
            listening = bytearray(65536)
            for port in self.listen_ports:
                outgoing[port] = 0
                listening[port] = 1
            self._masks, self._mask_key = (_network_order(outgoing),
                                           _network_order(listening)), key
        return self._masks

    def batch_done(self) -> None:
        """Called by sources every few hundred sockets: keeps the top counters bounded."""
        for counter in (self.local_port, self.peer, self.dest, self.dest_peers, self.tw_server,
                        self.cw_port, self.process):
            if counter is not None:
                counter.maybe_prune()

    def finish(self, top: int = 20) -> Census:
        self.batch_done()
        state_name = TCP_STATES.get
        census = Census(source=self.source)
        by_family = {2: [0] * 16, 10: [0] * 16}
        timers = [0] * 8
        counts = classes = self.class_counts()
        for fam, states in by_family.items():
            for state in range(16):
                for timer in range(8):
                    n = counts[count_index(fam, state, timer)]
                    states[state] += n
                    timers[timer] += n
        merged = [a + b for a, b in zip(by_family[2], by_family[10])]
        census.total = sum(merged)
        census.by_state = {TCP_STATES[s]: n for s, n in enumerate(merged)
                           if n and s in TCP_STATES}
        for fam, name in ((2, "ipv4"), (10, "ipv6")):
            counts = {TCP_STATES[s]: n for s, n in enumerate(by_family[fam])
                      if n and s in TCP_STATES}
            if counts:
                census.by_family_state[name] = counts
                census.by_family[name] = sum(counts.values())
        census.timers = {TIMER_NAMES.get(t, "unknown"): n for t, n in enumerate(timers) if n}
        by_timer: dict[str, dict[str, int]] = {}
        for fam in (2, 10):
            for state in range(16):
                for timer in range(8):
                    n = classes[count_index(fam, state, timer)]
                    if n:
                        row = by_timer.setdefault(TIMER_NAMES.get(timer, "unknown"), {})
                        name = TCP_STATES.get(state, str(state))
                        row[name] = row.get(name, 0) + n
        census.timers_by_state = by_timer
        # Every TIME_WAIT socket is counted (exactly) by state; those this host closed first
        # as the server, or that could not be classified, were counted as they streamed by:
        # the rest closed first as the client (outgoing connections).
        roles = dict(self.tw_roles)
        roles["client"] = merged[TIME_WAIT] - roles["server"] - roles["other"]
        census.listeners = sorted(self.listeners, key=lambda lst: (lst.port, lst.family))
        census.by_local_port = self.local_port.result(
            top * 4, lambda k: (swap16(k[0]), state_name(k[1], str(k[1]))))
        dest = self.dest
        peers: dict = {}
        for (ci, dst), n in self.peer.counts.items():  # the timer apart
            k = (ci >> 3, dst)
            peers[k] = peers.get(k, 0) + n
        for (ci, ends), n in dest.counts.items():
            k = (ci >> 3, ends[18:])
            peers[k] = peers.get(k, 0) + n
        for (ci, dst), n in self.dest_peers.counts.items():  # of destinations pruned away
            k = (ci >> 3, dst)
            peers[k] = peers.get(k, 0) + n
        census.by_peer = _top(peers, top * 4, self.peer.pruned + self.dest_peers.pruned,
                              self.peer.distinct + self.dest_peers.distinct,
                              lambda k: (format_address(k[0] & 0xFF, k[1]),
                                         state_name(k[0] >> 8, str(k[0] >> 8))))
        if self.process is not None:
            census.by_process = self.process.result(
                top * 4, lambda k: (k[0], state_name(k[1], str(k[1]))))

        def dest_key(k):
            fam, ends = k
            return (format_address(fam, ends[2:18]), format_address(fam, ends[18:]),
                    int.from_bytes(ends[:2], "big"))

        destinations: dict = {}
        time_wait: dict = {}
        for (ci, ends), n in dest.counts.items():
            k = (ci >> 3 & 0xFF, ends)
            destinations[k] = destinations.get(k, 0) + n
            if ci >> 11 == TIME_WAIT:
                time_wait[k] = time_wait.get(k, 0) + n
        census.by_destination = _top(destinations, top, dest.pruned, dest.distinct, dest_key)
        timed: dict = {}
        for (ci, ends), n in dest.counts.items():
            k = (ci, ends[:2] + ends[18:])  # the source address apart
            timed[k] = timed.get(k, 0) + n

        def timed_key(k):
            ci, ends = k
            fam = ci >> 3 & 0xFF
            return (format_address(fam, ends[2:]), int.from_bytes(ends[:2], "big"),
                    state_name(ci >> 11, str(ci >> 11)), TIMER_NAMES.get(ci & 7, "unknown"))

        census.outgoing_timers = _top(timed, top * 10, dest.pruned, dest.distinct, timed_key)
        census.timewait_by_destination = _top(time_wait, top, dest.pruned, dest.distinct,
                                              dest_key)
        if self.young_ms is not None and self.ages_seen:
            census.timewait_young_ms = self.young_ms
            census.timewait_young_by_destination = _top(
                self.young, YOUNG_CAP, self.young_dropped, 0, dest_key)
        census.timewait_server_side = self.tw_server.result(
            top, lambda k: (swap16(k[0]), format_address(k[1], k[2])))
        census.timewait_roles = roles
        census.close_wait_by_port = self.cw_port.result(top)
        census.close_wait_unread = self.cw_unread
        census.close_wait_eof_unread = self.cw_eof_unread
        census.close_wait_inodes = self.cw_inodes
        census.close_wait_inodes_truncated = self.cw_truncated
        census.close_wait_no_inode = dict(sorted(self.cw_no_inode.items()))
        census.close_wait_no_inode_keys = self.cw_no_inode_keys
        census.ephemeral_range = self.ephemeral
        census.skipped_lines = self.skipped_lines
        return census
