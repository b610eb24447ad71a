"""One policy for judging kernel counters, used by every rule that reads one.

- A total since boot (or since the namespace was created) is history, not the present: info at
  most, never a warning, so a burst months ago does not keep a cron check red. Small totals
  (below the rule's `notable` count) are not even info: a counter that moved once since boot
  is nothing to act on.
- A change over a known time judges: `--interval` (two samples now) or `--state-dir` (since
  the previous run). Growth is a warning (critical from the rule's critical rate); no growth
  is ok.
- A counter that restarted from zero (reboot, namespace recreated, a counter went down, the
  clock stepped back) is said as such, info at most: the count since the restart covers an
  unknown part of the window.

Rules call `change()` (or `change_of()` for counters outside /proc/net/{netstat,snmp}) and then
`judge()`; the evidence dict of a Change is what findings carry (delta, seconds, rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netdiag.facts import Facts
from netdiag.model import Severity

# Since-boot totals below this are "nothing to report" unless a rule says otherwise.
NOTABLE = 10


@dataclass(frozen=True)
class Change:
    """A counter's total now, and over a known window its change (or why there is none)."""

    counter: str  # as nstat names it: "TcpExt.ListenOverflows"; or "softnet.dropped"
    total: int
    delta: int | None = None
    seconds: float | None = None
    reset: str | None = None  # the baseline does not apply: why
    baseline: str | None = None  # "interval" or "previous run"

    @property
    def name(self) -> str:
        return self.counter.rsplit(".", 1)[-1]

    @property
    def rate(self) -> float | None:
        if self.delta is None or not self.seconds or self.reset:
            return None
        return self.delta / self.seconds

    @property
    def growing(self) -> bool:
        return bool(self.delta) and self.reset is None

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"counter": self.counter, "total": self.total}
        if self.baseline:
            out["since"] = self.baseline
        if self.reset:
            out.update(reset=True, reset_reason=self.reset)
        if self.delta is not None:
            out.update(delta=self.delta, seconds=self.seconds)
            if self.rate is not None:
                out["rate_per_s"] = round(self.rate, 3)
        return out


@dataclass(frozen=True)
class Verdict:
    severity: Severity
    text: str


def _window(facts: Facts, now_at: float, before_at: float) -> tuple[float | None, str | None]:
    """Seconds between the samples, and a reset reason when they cannot be compared."""
    if facts.baseline_reset:
        return None, facts.baseline_reset
    seconds = now_at - before_at if now_at and before_at else facts.interval
    if seconds is None:
        return None, None
    if seconds <= 0:
        return None, "the clock went back since the previous sample"
    return round(seconds, 3), None


def change_of(counter: str, now: int, before: int | None, facts: Facts,
              now_at: float = 0.0, before_at: float = 0.0) -> Change:
    """A Change from two readings (before None: only a total is known)."""
    if before is None or not facts.interval:
        return Change(counter, now)
    seconds, reset = _window(facts, now_at, before_at)
    if reset is None and now < before:
        reset = "the counter went down (it restarted from zero)"
    if reset:
        return Change(counter, now, delta=now, seconds=seconds, reset=reset,
                      baseline=facts.baseline)
    return Change(counter, now, delta=now - before, seconds=seconds, baseline=facts.baseline)


def change(facts: Facts, proto: str, name: str) -> Change | None:
    """TcpExt/Tcp/Udp... counter from /proc/net/{netstat,snmp,snmp6}, judged by the baseline
    the run has (--interval or --state-dir), if any."""
    now = facts.counters
    if now is None:
        return None
    value = now.get(proto, name)
    if value is None:
        return None
    before = facts.counters_before
    prev = before.get(proto, name) if before is not None else None
    return change_of(f"{proto}.{name}", value, prev, facts, now.taken_at,
                     before.taken_at if before is not None else 0.0)


def judge(ch: Change, *, crit_rate: float | None = None, notable: int = NOTABLE,
          grow: Severity = Severity.WARNING) -> Verdict:
    """The severity the policy allows for one counter, and a phrase that says why."""
    if ch.reset:
        sev = Severity.INFO if ch.total >= notable else Severity.OK
        return Verdict(sev, f"{ch.name} restarted from zero ({ch.reset}); {ch.total} since")
    if ch.delta is not None:
        if ch.delta > 0:
            rate = ch.rate or 0.0
            sev = Severity.CRITICAL if crit_rate is not None and rate >= crit_rate else grow
            return Verdict(sev, f"{ch.name} +{ch.delta} in {ch.seconds:g} s ({rate:.3g}/s)")
        tail = f" ({ch.total} before)" if ch.total else ""
        return Verdict(Severity.OK, f"{ch.name} did not grow in {ch.seconds:g} s{tail}")
    if ch.total >= notable:
        return Verdict(Severity.INFO, f"{ch.name} = {ch.total} since boot (or since the "
                                      "namespace was created); run with --interval or "
                                      "--state-dir for the rate")
    if ch.total:
        return Verdict(Severity.OK, f"{ch.name} = {ch.total} since boot, too few to matter")
    return Verdict(Severity.OK, f"{ch.name} = 0")


def judge_all(changes: list[Change], **kw: Any) -> Verdict:
    """The worst verdict over several counters of one finding; texts of the non-ok ones."""
    verdicts = [judge(c, **kw) for c in changes]
    worst = max((v.severity for v in verdicts), default=Severity.OK)
    texts = [v.text for v in verdicts if v.severity == worst] or [v.text for v in verdicts]
    return Verdict(worst, "; ".join(texts))


def window_change(counter: str, before: int | None, after: int | None, seconds: float,
                  baseline: str) -> Change | None:
    """A counter read at both ends of a window the run measured itself (the backlog probe's
    window): judged like an --interval change."""
    if after is None:
        return None
    if before is None or seconds <= 0:
        return Change(counter, after)
    if after < before:
        return Change(counter, after, delta=after, seconds=round(seconds, 3),
                      reset="the counter went down (it restarted from zero)", baseline=baseline)
    return Change(counter, after, delta=after - before, seconds=round(seconds, 3),
                  baseline=baseline)
