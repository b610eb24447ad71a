"""Run the real CLI with one fault injected (tests only): a failing rule, a failing collector
or a bug outside every guard. The product code is not changed; this process replaces one
function before calling netdiag.cli.main().

Usage: python3 inject.py FAULT [FAULT...] -- netdiag arguments...

Faults:
  rule:TOPIC        that topic's check() raises KeyError('injected')
  rules:all         every topic's check() raises KeyError('injected')
  collector:NAME    a collector raises RuntimeError('injected'); NAME is counters, sockets,
                    sockstat or sysctl
  internal          building the report raises ValueError('injected') (outside the guards)
"""

from __future__ import annotations

import dataclasses
import sys


def _raise(exc: BaseException):
    def boom(*_args, **_kw):
        raise exc

    return boom


def inject(fault: str) -> None:
    kind, _, name = fault.partition(":")
    if kind in ("rule", "rules"):
        from netdiag import rules

        names = list(rules.TOPICS) if name == "all" else [name]
        for topic in names:
            rules.TOPICS[topic] = dataclasses.replace(rules.TOPICS[topic],
                                                      check=_raise(KeyError("injected")))
    elif kind == "collector":
        from netdiag.collect import gather, procfs

        target = {"counters": (procfs, "read_counters"), "sockets": (gather, "read_census"),
                  "sockstat": (procfs, "read_sockstat"),
                  "sysctl": (procfs, "read_sysctls")}[name]
        setattr(*target, _raise(RuntimeError("injected")))
    elif kind == "internal":
        from netdiag import pipeline

        pipeline.build_report = _raise(ValueError("injected"))
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    for fault in args[:split]:
        inject(fault)
    from netdiag.cli import main as netdiag_main

    netdiag_main(args[split + 1:])


if __name__ == "__main__":
    main()
