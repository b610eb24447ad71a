"""Prometheus text exposition (version 0.0.4), as the node_exporter textfile collector reads
it: legacy metric names, HELP and TYPE once per metric, samples grouped, no timestamps."""

from __future__ import annotations

import re
from typing import TextIO

from netdiag.model import Report
from netdiag.render._safe import clean

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _escape_label(value: str) -> str:
    """A label value: control, bidi and format characters and undecodable bytes shown as
    escapes (clean: a process name reaches whoever `cat`s the file or curls /metrics), then
    the exposition format's own escapes."""
    return clean(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return clean(text).replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def render_prometheus(report: Report, out: TextIO) -> None:
    groups: dict[str, list] = {}
    for s in report.metrics:
        if not _NAME.match(s.name):
            raise ValueError(f"invalid metric name {s.name!r}")
        groups.setdefault(s.name, []).append(s)
    seen: set[tuple] = set()
    for name, samples in groups.items():
        first = samples[0]
        out.write(f"# HELP {name} {_escape_help(first.help)}\n")
        out.write(f"# TYPE {name} {first.kind}\n")
        for s in samples:
            key = (name, s.labels)
            if key in seen:  # each name + label set once
                continue
            seen.add(key)
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in s.labels)
            out.write(f"{name}{{{labels}}} {_value(s.value)}\n" if labels else
                      f"{name} {_value(s.value)}\n")
