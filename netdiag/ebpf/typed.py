"""Typed raw tracepoints (tp_btf): a program bcc compiled, loaded and attached through libbpf.

A tracepoint program (what bcc attaches) runs after the kernel has filled the event's trace
record, and reads a kernel struct only through a helper call per read. A typed raw tracepoint
gets the tracepoint's own arguments as pointers the verifier knows the type of (from the
kernel's BTF, `btf_trace_<event>`): no record is filled, and a socket's fields are plain loads.
For `states` on one-CPU connection churn, bench/probes.py measured 4.4% against 5.3% through
the tracepoint (25 pairs; 3.9% against 4.3% on nginx). bcc compiles the program but cannot
load this program type, so netdiag loads its instructions (map descriptors already in them)
with libbpf, which bcc itself links.
Whatever fails here (no libbpf, no BTF type for the event, a kernel that refuses the program
type) leaves the caller to use the tracepoint instead.
"""

from __future__ import annotations

import ctypes
import errno
import os

BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
LOG_SIZE = 1 << 20


class _LoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts (libbpf 1.x, up to log_buf; `sz` tells libbpf the size)."""

    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int),
                ("expected_attach_type", ctypes.c_int), ("prog_btf_fd", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_ifindex", ctypes.c_uint32),
                ("kern_version", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_prog_fd", ctypes.c_uint32), ("attach_btf_obj_fd", ctypes.c_uint32),
                ("fd_array", ctypes.c_void_p), ("func_info", ctypes.c_void_p),
                ("func_info_cnt", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("line_info", ctypes.c_void_p), ("line_info_cnt", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("log_level", ctypes.c_uint32),
                ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_char_p)]


_LIB: list = []
_BTF_IDS: dict[str, int] = {}


def _libbpf():
    """libbpf.so.1 with the calls used here typed, or None."""
    if not _LIB:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
            lib.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.c_void_p, ctypes.c_size_t,
                                          ctypes.POINTER(_LoadOpts)]
            lib.bpf_prog_load.restype = ctypes.c_int
            lib.libbpf_find_vmlinux_btf_id.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.libbpf_find_vmlinux_btf_id.restype = ctypes.c_int
            lib.bpf_raw_tracepoint_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.bpf_raw_tracepoint_open.restype = ctypes.c_int
            lib.libbpf_set_print.argtypes = [ctypes.c_void_p]
            lib.libbpf_set_print.restype = ctypes.c_void_p
        except (OSError, AttributeError):
            lib = None
        _LIB.append(lib)
    return _LIB[0]


def _btf_id(lib, event: str) -> int:
    """The BTF id of btf_trace_<event> (negative errno when absent), looked up once per run
    with libbpf's messages off (it prints "not found" on stderr itself)."""
    if event not in _BTF_IDS:
        old = lib.libbpf_set_print(None)
        try:
            _BTF_IDS[event] = lib.libbpf_find_vmlinux_btf_id(event.encode(), BPF_TRACE_RAW_TP)
        finally:
            lib.libbpf_set_print(old)
    return _BTF_IDS[event]


def unavailable(event: str) -> str | None:
    """Why `event` cannot be attached as a typed raw tracepoint here (None: it can be tried)."""
    lib = _libbpf()
    if lib is None:
        return "libbpf.so.1 is not installed"
    if _btf_id(lib, event) < 0:
        return f"the kernel's BTF has no type for tracepoint {event} (btf_trace_{event})"
    return None


def load(insns: bytes, name: str, event: str) -> int:
    """Load a compiled program as a typed raw tracepoint program for `event`; its descriptor.
    Raises OSError with the verifier's last lines when the kernel refuses it (libbpf loads
    once without the verifier's log, and again with it only when that fails)."""
    lib = _libbpf()
    if lib is None:
        raise OSError(errno.ENOENT, "libbpf.so.1 is not installed")
    btf_id = _btf_id(lib, event)
    if btf_id < 0:
        raise OSError(-btf_id, f"no BTF type btf_trace_{event}")
    log = ctypes.create_string_buffer(LOG_SIZE)
    opts = _LoadOpts(sz=ctypes.sizeof(_LoadOpts), expected_attach_type=BPF_TRACE_RAW_TP,
                     attach_btf_id=btf_id, log_level=0, log_size=LOG_SIZE,
                     log_buf=ctypes.cast(log, ctypes.c_char_p))
    code = ctypes.create_string_buffer(insns, len(insns))
    old = lib.libbpf_set_print(None)
    try:
        fd = lib.bpf_prog_load(BPF_PROG_TYPE_TRACING, name.encode()[:15], b"GPL", code,
                               len(insns) // 8, ctypes.byref(opts))
    finally:
        lib.libbpf_set_print(old)
    if fd < 0:
        tail = " ".join(log.value.decode(errors="replace").strip().splitlines()[-2:])
        raise OSError(-fd, f"{os.strerror(-fd)}{': ' + tail if tail else ''}")
    return fd


def attach(prog_fd: int) -> int:
    """Attach a loaded typed raw tracepoint program; the link's descriptor (close it to
    detach)."""
    lib = _libbpf()
    if lib is None:
        raise OSError(errno.ENOENT, "libbpf.so.1 is not installed")
    fd = lib.bpf_raw_tracepoint_open(None, prog_fd)
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd))
    return fd
