"""Keep what belongs to one network namespace in probe results.

Tracepoints fire for every namespace and these carry no namespace id, so with --netns the
rows are filtered by the namespace's own listening sockets (exact, by socket inode), local
ports and peers (approximate: the same port may be in use in another namespace). Host-wide
probes (drops, softirq) are left as they are. Each result says which filter applied.
"""

from __future__ import annotations

from typing import Any

from netdiag.facts import Census


def _ports(census: Census) -> set[int]:
    ports = {lst.port for lst in census.listeners}
    if census.by_local_port is not None:
        ports.update(k[0] for k, _ in census.by_local_port.items)
    return ports


def _peers(census: Census) -> set[str]:
    peers = set()
    if census.by_peer is not None:
        peers.update(k[0] for k, _ in census.by_peer.items)
    if census.by_destination is not None:
        peers.update(k[1] for k, _ in census.by_destination.items)
    return peers


def filter_probe(name: str, facts: dict[str, Any], census: Census, label: str) -> None:
    ports, peers = _ports(census), _peers(census)
    inodes = {lst.inode for lst in census.listeners}
    if name == "states":
        facts["active_closes"] = [r for r in facts["active_closes"] if r["peer"] in peers]
        for key in ("peer_closed_first_by_port", "accepted_per_port",
                    "close_wait_still_waiting", "active_closes_by_local_port"):
            facts[key] = [r for r in facts[key] if r["local_port"] in ports]
        facts["connects_per_peer"] = [r for r in facts["connects_per_peer"]
                                      if r["peer"] in peers]
        how = "by the namespace's local ports and peers (approximate)"
    elif name == "backlog":
        facts["listen_calls"] = [c for c in facts["listen_calls"] if c.get("inode") in inodes]
        facts["synack_retransmits"] = [r for r in facts["synack_retransmits"]
                                       if r["local_port"] in ports]
        # accept_queues_sampled comes from sock_diag inside the namespace: already exact.
        how = "listen() calls by socket inode (exact); SYN-ACKs by local port (approximate)"
    elif name == "wakeups":
        facts["listeners"] = [r for r in facts["listeners"] if r.get("inode") in inodes]
        facts["data_ready_by_local_port"] = [r for r in facts.get("data_ready_by_local_port",
                                                                   []) if r["local_port"] in ports]
        how = "accept() by the listening socket's inode (exact); wake-ups by local port " \
              "(approximate)"
    elif name == "rcvbuf":
        for key in ("space_adjust_by_port", "rcvbuf_grow_by_port"):
            facts[key] = [r for r in facts[key] if r["local_port"] in ports]
        how = "by local port (approximate); setsockopt calls and queue limits: host-wide"
    elif name == "resets":
        facts["sent"] = [r for r in facts["sent"] if r["local_port"] in ports]
        facts["received_by_port"] = [r for r in facts["received_by_port"]
                                     if r["local_port"] in ports]
        how = "by local port (approximate)"
    elif name == "retrans":
        facts["by_peer"] = [r for r in facts["by_peer"] if r["peer"] in peers]
        how = "by peer address (approximate)"
    else:
        how = "not filtered: this probe measures the whole host"
    facts["netns_filter"] = f"netns {label}: {how}"
