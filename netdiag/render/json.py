"""The contract's JSON document (schema netdiag/1)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from netdiag.model import Report

SCHEMA = "netdiag/1"


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "generated_at": report.generated_at,
        "host": {"hostname": report.host.hostname, "kernel": report.host.kernel,
                 "netns": report.host.netns},
        "status": report.status,
        "findings": [f.to_dict() for f in report.findings],
        "facts": report.facts,
        "errors": [e.to_dict() for e in report.errors],
    }


def render_json(report: Report, out: TextIO) -> None:
    json.dump(report_dict(report), out, indent=2, default=str)
    out.write("\n")
