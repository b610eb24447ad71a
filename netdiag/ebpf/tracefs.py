"""Tracepoint format files: field offsets for the BPF programs, enum names for the reports.

Every probe reads its tracepoint fields at the offsets the running kernel declares in
events/CATEGORY/NAME/format, so a field that moved or vanished is noticed here (and that
part of the probe is compiled out) instead of reading garbage. Enum names (drop reasons,
reset reasons) come from the same file's __print_symbolic table: never a hard-coded list.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    offset: int
    size: int
    signed: bool
    array: int | None  # element count for arrays (saddr[4])


_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
                    r"\s*signed:(?P<signed>\d+);")
_PAIR = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")


def tracefs_root() -> str | None:
    for path in MOUNTS:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def format_path(root: str, category: str, event: str) -> str:
    return os.path.join(root, "events", category, event, "format")


def parse_fields(text: str) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for m in _FIELD.finditer(text):
        decl = m.group("decl").strip()
        array = None
        am = re.search(r"\[(\d+)\]$", decl)
        if am:
            array = int(am.group(1))
            decl = decl[: am.start()]
        name = re.split(r"[\s*]+", decl)[-1]
        ctype = decl[: len(decl) - len(name)].strip()
        fields[name] = Field(name, ctype, int(m.group("off")), int(m.group("size")),
                             m.group("signed") == "1", array)
    return fields


def parse_symbolic(text: str, field: str) -> dict[int, str]:
    """The {value, "NAME"} table __print_symbolic gives for REC->field in the print fmt.

    The call is found by matching parentheses (print formats nest one symbolic table in a
    ternary next to another); entries whose value is not a number are skipped."""
    fmt = text[text.find("print fmt:"):] if "print fmt:" in text else text
    marker = f"__print_symbolic(REC->{field},"
    start = fmt.find(marker)
    if start < 0:
        return {}
    depth, i = 1, start + len("__print_symbolic(")
    in_str = False
    while i < len(fmt) and depth:
        ch = fmt[i]
        if ch == '"' and fmt[i - 1] != "\\":
            in_str = not in_str
        elif not in_str:
            depth += ch == "("
            depth -= ch == ")"
        i += 1
    return {int(v, 0): name for v, name in _PAIR.findall(fmt[start:i])}


def read_format(root: str, category: str, event: str) -> str | None:
    try:
        with open(format_path(root, category, event)) as fh:
            return fh.read()
    except OSError:
        return None
