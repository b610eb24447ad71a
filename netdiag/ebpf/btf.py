"""Struct member offsets of the running kernel, from its BTF (/sys/kernel/btf/vmlinux).

bcc compiles against the installed kernel headers, which may not match the running kernel
(Debian's 6.1 headers under a 6.18 kernel). Tracepoint fields are read at their format-file
offsets; the struct members a probe needs beyond them (a socket's namespace and ports, a
task's file table, sk_buff headers, syscall registers) are looked up here, in the running
kernel's own type information. The BTF blob is parsed directly (its format is a stable
kernel ABI, include/uapi/linux/btf.h): no bpftool, no kernel headers. Without BTF the probes
degrade and say what they lost.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

VMLINUX = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

# enum btf_kind values (include/uapi/linux/btf.h) and the bytes following each type record.
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_DECL_TAG, KIND_ENUM64 = 13, 14, 15, 17, 19
_FIXED_EXTRA = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_PER_MEMBER = {KIND_STRUCT: 12, KIND_UNION: 12, KIND_ENUM: 8, KIND_FUNC_PROTO: 8,
               KIND_DATASEC: 12, KIND_ENUM64: 12}


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 for a plain (byte-aligned) member


class BTF:
    """The structs and unions of one BTF blob, by id, with their members decoded lazily."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise ValueError("BTF blob too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise ValueError("not a BTF blob (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._types = hdr_len + type_off
        self._strings = hdr_len + str_off
        self._str_end = self._strings + str_len
        # struct/union id -> (name offset, info, record position); names -> ids
        self._records: dict[int, tuple[int, int, int]] = {}
        self.by_name: dict[str, list[int]] = {}
        pos, end, tid = self._types, self._types + type_len, 1
        unpack = struct.unpack_from
        while pos < end:
            name_off, info, _size = unpack("<III", data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            if kind in (KIND_STRUCT, KIND_UNION):
                self._records[tid] = (name_off, info, pos)
                if name_off:
                    self.by_name.setdefault(self._str(name_off), []).append(tid)
            pos += 12 + _FIXED_EXTRA.get(kind, 0) + vlen * _PER_MEMBER.get(kind, 0)
            tid += 1

    def _str(self, off: int) -> str:
        start = self._strings + off
        stop = self._data.index(b"\0", start, self._str_end)
        return self._data[start:stop].decode(errors="replace")

    def members(self, tid: int) -> list[Member]:
        rec = self._records.get(tid)
        if rec is None:
            return []
        _name, info, pos = rec
        kind_flag = info >> 31
        out = []
        for i in range(info & 0xFFFF):
            name_off, type_id, offset = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
            if kind_flag:
                out.append(Member(self._str(name_off), type_id, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append(Member(self._str(name_off), type_id, offset, 0))
        return out

    def offsets(self, struct_name: str, wanted: tuple[str, ...]) -> dict[str, int]:
        """Byte offsets of `wanted` members (looking through anonymous members); bitfields
        are left out: a probe cannot read them as whole bytes."""
        found: dict[str, int] = {}
        for root in self.by_name.get(struct_name, []):
            self._walk(root, 0, wanted, found, 0)
            if len(found) == len(wanted):
                break
        return found

    def _walk(self, tid: int, base: int, wanted, found: dict[str, int], depth: int) -> None:
        if depth > 6:
            return
        for m in self.members(tid):
            if m.name in wanted and m.name not in found:
                if not m.bitfield_size and m.bit_offset % 8 == 0:
                    found[m.name] = (base + m.bit_offset) // 8
            elif m.name == "" and m.type_id in self._records:
                self._walk(m.type_id, base + m.bit_offset, wanted, found, depth + 1)


# What the probes read beyond tracepoint fields: C define -> (struct, member).
MEMBERS: dict[str, tuple[str, str]] = {
    # a socket: namespace, ports, state, family, peer address
    "SKC_NET_OFF": ("sock_common", "skc_net"),
    "SKC_NUM_OFF": ("sock_common", "skc_num"),
    "SKC_DPORT_OFF": ("sock_common", "skc_dport"),
    "SKC_FAMILY_OFF": ("sock_common", "skc_family"),
    "SKC_STATE_OFF": ("sock_common", "skc_state"),
    "SKC_DADDR_OFF": ("sock_common", "skc_daddr"),
    "SKC_V6_DADDR_OFF": ("sock_common", "skc_v6_daddr"),
    "NET_NS_OFF": ("net", "ns"),
    "NS_INUM_OFF": ("ns_common", "inum"),
    "SK_WQ_OFF": ("sock", "sk_wq"),
    "SK_SOCKET_OFF": ("sock", "sk_socket"),
    "SK_PROTOCOL_OFF": ("sock", "sk_protocol"),
    "INET_SPORT_OFF": ("inet_sock", "inet_sport"),
    # a task's file table, to go from a syscall's fd to its socket
    "TASK_FILES_OFF": ("task_struct", "files"),
    "TASK_PID_OFF": ("task_struct", "pid"),
    "TASK_TGID_OFF": ("task_struct", "tgid"),
    "TASK_COMM_OFF": ("task_struct", "comm"),
    "FILES_FDT_OFF": ("files_struct", "fdt"),
    "FDT_MAX_OFF": ("fdtable", "max_fds"),
    "FDT_FD_OFF": ("fdtable", "fd"),
    "FILE_PRIV_OFF": ("file", "private_data"),
    "SOCKET_TYPE_OFF": ("socket", "type"),
    "SOCKET_FILE_OFF": ("socket", "file"),
    "SOCKET_SK_OFF": ("socket", "sk"),
    "SOCKALLOC_INODE_OFF": ("socket_alloc", "vfs_inode"),
    "INODE_INO_OFF": ("inode", "i_ino"),
    # a socket's wait queue: who waits on a listener, exclusively or not
    "SOCKWQ_WAIT_OFF": ("socket_wq", "wait"),
    "WQH_HEAD_OFF": ("wait_queue_head", "head"),
    "WQE_FLAGS_OFF": ("wait_queue_entry", "flags"),
    "WQE_FUNC_OFF": ("wait_queue_entry", "func"),
    "WQE_ENTRY_OFF": ("wait_queue_entry", "entry"),
    # its lock, held by the kernel for the whole wake-up walk (not a plain spinlock word on a
    # PREEMPT_RT kernel: there spinlock has no rlock, and the group is missing)
    "WQH_LOCK_OFF": ("wait_queue_head", "lock"),
    "SPINLOCK_RLOCK_OFF": ("spinlock", "rlock"),
    "RAWLOCK_LOCK_OFF": ("raw_spinlock", "raw_lock"),
    # a packet: its device's namespace, its headers
    "SKB_DEV_OFF": ("sk_buff", "dev"),
    "SKB_SK_OFF": ("sk_buff", "sk"),
    "SKB_HEAD_OFF": ("sk_buff", "head"),
    "SKB_NH_OFF": ("sk_buff", "network_header"),
    "SKB_TH_OFF": ("sk_buff", "transport_header"),
    "DEV_NET_OFF": ("net_device", "nd_net"),
    # syscall registers at sys_exit (x86-64 only: arch/x86/include/asm/ptrace.h)
    "REGS_NR_OFF": ("pt_regs", "orig_ax"),
    "REGS_ARG0_OFF": ("pt_regs", "di"),
    "REGS_ARG1_OFF": ("pt_regs", "si"),
    "REGS_ARG2_OFF": ("pt_regs", "dx"),
    "REGS_ARG3_OFF": ("pt_regs", "r10"),
    "REGS_CS_OFF": ("pt_regs", "cs"),
    # read from user space, not by a probe: runs the kernel skipped per program
    "PROG_INFO_MISSES_OFF": ("bpf_prog_info", "recursion_misses"),
}

# Offsets computed from others: net.ns + ns_common.inum.
DERIVED = {"NET_INUM_OFF": "net.ns.inum"}

# Groups of offsets that only make sense together: a probe part needs all of a group.
GROUPS: dict[str, tuple[str, ...]] = {
    "sk_netns": ("SKC_NET_OFF", "NET_INUM_OFF"),
    "sk_ports": ("SKC_NUM_OFF", "SKC_DPORT_OFF", "SKC_FAMILY_OFF", "SKC_STATE_OFF",
                 "SKC_DADDR_OFF", "SKC_V6_DADDR_OFF"),
    "sk_protocol": ("SK_PROTOCOL_OFF",),
    "inet_sport": ("INET_SPORT_OFF",),
    "sk_inode": ("SK_SOCKET_OFF", "SOCKALLOC_INODE_OFF", "INODE_INO_OFF"),
    "fd_socket": ("TASK_FILES_OFF", "FILES_FDT_OFF", "FDT_MAX_OFF", "FDT_FD_OFF",
                  "FILE_PRIV_OFF", "SOCKET_TYPE_OFF", "SOCKET_FILE_OFF", "SOCKET_SK_OFF"),
    "task_ids": ("TASK_PID_OFF", "TASK_TGID_OFF", "TASK_COMM_OFF"),
    "waitqueue": ("SK_WQ_OFF", "SOCKWQ_WAIT_OFF", "WQH_HEAD_OFF", "WQE_FLAGS_OFF",
                  "WQE_FUNC_OFF", "WQE_ENTRY_OFF"),
    "wq_lock": ("WQH_LOCK_OFF", "SPINLOCK_RLOCK_OFF", "RAWLOCK_LOCK_OFF"),
    "skb_netns": ("SKB_DEV_OFF", "SKB_SK_OFF", "DEV_NET_OFF"),
    "skb_headers": ("SKB_HEAD_OFF", "SKB_NH_OFF", "SKB_TH_OFF"),
    "syscall_regs": ("REGS_NR_OFF", "REGS_ARG0_OFF", "REGS_ARG1_OFF", "REGS_ARG2_OFF",
                     "REGS_ARG3_OFF", "REGS_CS_OFF"),
}


@dataclass
class Layout:
    """The offsets found, by C define, and for each group that is incomplete, why."""

    offsets: dict[str, int]
    missing: dict[str, str]  # group -> reason

    def defines(self, groups: tuple[str, ...]) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in groups:
            if g in self.missing:
                continue
            for name in GROUPS[g]:
                out[name] = self.offsets[name]
            out[f"HAVE_{g.upper()}"] = 1
        return out

    def why(self, group: str) -> str | None:
        return self.missing.get(group)


def compute_layout(btf: BTF) -> Layout:
    wanted: dict[str, list[str]] = {}
    for struct_name, member in MEMBERS.values():
        wanted.setdefault(struct_name, []).append(member)
    found: dict[str, dict[str, int]] = {s: btf.offsets(s, tuple(m)) for s, m in wanted.items()}
    offsets: dict[str, int] = {}
    for define, (struct_name, member) in MEMBERS.items():
        if member in found[struct_name]:
            offsets[define] = found[struct_name][member]
    # The namespace inode is net.ns + ns_common.inum; skc_net and nd_net are possible_net_t,
    # whose only member is the struct net pointer (at offset 0).
    if "NET_NS_OFF" in offsets and "NS_INUM_OFF" in offsets:
        offsets["NET_INUM_OFF"] = offsets["NET_NS_OFF"] + offsets["NS_INUM_OFF"]
    missing: dict[str, str] = {}
    for group, names in GROUPS.items():
        absent = [DERIVED.get(n) or ".".join(MEMBERS[n]) for n in names if n not in offsets]
        if absent:
            missing[group] = "this kernel's BTF has no " + ", ".join(absent)
    return Layout(offsets, missing)


_CACHE: dict[str, Layout] = {}


def kernel_layout(path: str = VMLINUX) -> Layout:
    """The running kernel's layout (parsed once per run). Never raises: without BTF every
    group is missing, with the reason."""
    if path in _CACHE:
        return _CACHE[path]
    if not os.path.exists(path):
        layout = Layout({}, {g: f"the kernel has no BTF ({path})" for g in GROUPS})
    else:
        try:
            with open(path, "rb") as fh:
                layout = compute_layout(BTF(fh.read()))
        except (OSError, ValueError, struct.error) as exc:
            layout = Layout({}, {g: f"cannot read BTF ({path}): {exc}" for g in GROUPS})
    _CACHE[path] = layout
    return layout
