"""Renderers format a Report; none computes or judges anything."""

from __future__ import annotations

from typing import TextIO

from netdiag.model import Report

FORMATS = ("table", "json", "prometheus", "nagios")


def render(report: Report, fmt: str, out: TextIO, verbose: bool = False) -> None:
    """Write the report in `fmt`. verbose: tables add each finding's explanation and rule
    and show every row (the other formats always carry everything)."""
    if fmt == "json":
        from netdiag.render.json import render_json

        render_json(report, out)
    elif fmt == "prometheus":
        from netdiag.render.prometheus import render_prometheus

        render_prometheus(report, out)
    elif fmt == "nagios":
        from netdiag.render.nagios import render_nagios

        render_nagios(report, out)
    elif fmt == "table":
        from netdiag.render.table import render_table

        render_table(report, out, verbose)
    else:  # guarded by the CLI; kept for callers of the library
        raise ValueError(f"unknown format {fmt!r}")
