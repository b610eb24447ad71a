"""Struct member offsets of the running kernel, from its BTF (/sys/kernel/btf/vmlinux).

bcc compiles against the installed kernel headers, which may not match the running kernel
(a distribution kernel's headers for a custom kernel). Tracepoint fields are read at their
format-file offsets; the few struct members a probe needs beyond them (sk_buff's header
offsets, for drop ports) are looked up here, in the running kernel's own type information,
through `bpftool btf dump ... format raw`. Without BTF or bpftool, the caller degrades.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

VMLINUX = "/sys/kernel/btf/vmlinux"
_TYPE = re.compile(r"^\[(\d+)\] (STRUCT|UNION) '([^']*)'")
_MEMBER = re.compile(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)")


def parse_raw(text: str) -> dict[int, tuple[str, list[tuple[str, int, int]]]]:
    """{type id: (name, [(member, type id, bit offset)])} for structs and unions."""
    types: dict[int, tuple[str, list[tuple[str, int, int]]]] = {}
    members: list[tuple[str, int, int]] | None = None
    for line in text.splitlines():
        if line.startswith("["):
            m = _TYPE.match(line)
            if m:
                members = []
                types[int(m.group(1))] = (m.group(3), members)
            else:
                members = None
        elif members is not None and line.startswith("\t'"):
            m = _MEMBER.match(line)
            if m:
                members.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return types


def find_offsets(types, struct: str, wanted: tuple[str, ...]) -> dict[str, int]:
    """Byte offsets of `wanted` members in `struct`, looking through anonymous members."""
    roots = [tid for tid, (name, _) in types.items() if name == struct]
    if not roots:
        return {}
    found: dict[str, int] = {}

    def walk(tid: int, base_bits: int, depth: int) -> None:
        if depth > 6 or tid not in types:
            return
        for name, child, bits in types[tid][1]:
            if name in wanted and name not in found:
                found[name] = (base_bits + bits) // 8
            elif name == "(anon)":
                walk(child, base_bits + bits, depth + 1)

    walk(roots[0], 0, 0)
    return found


def struct_offsets(struct: str, wanted: tuple[str, ...]) -> tuple[dict[str, int], str | None]:
    """Offsets and, when they cannot be had, why."""
    if not os.path.exists(VMLINUX):
        return {}, f"the kernel has no BTF ({VMLINUX})"
    bpftool = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.path.exists(p)), None)
    if bpftool is None:
        return {}, "bpftool is not installed (apt-get install bpftool)"
    try:
        out = subprocess.run([bpftool, "btf", "dump", "file", VMLINUX, "format", "raw"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {}, f"bpftool could not read BTF: {exc}"
    offsets = find_offsets(parse_raw(out), struct, wanted)
    missing = [w for w in wanted if w not in offsets]
    if missing:
        return {}, f"struct {struct} has no {', '.join(missing)} in this kernel's BTF"
    return offsets, None
