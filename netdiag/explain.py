"""`netdiag explain`: the documented rule behind a topic or finding id, offline."""

from __future__ import annotations

from typing import TextIO

from netdiag.errors import UsageError
from netdiag.rules import SPECS, TOPICS


def explain_data(what: str) -> dict:
    """The JSON of `explain --json` (docs/schema/netdiag.schema.json: explain_finding,
    explain_topic)."""
    from netdiag.render.json import SCHEMA

    if what in SPECS:
        s = SPECS[what]
        return {"schema": SCHEMA, "id": s.id, "topic": s.topic, "title": s.title,
                "rule": {"text": s.rule.text, "source": s.rule.source},
                "explanation": s.explanation, "recommendation": s.recommendation,
                "thresholds": s.thresholds, "counters": list(s.counters)}
    if what in TOPICS:
        t = TOPICS[what]
        return {"schema": SCHEMA, "topic": t.name, "summary": t.summary,
                "background": t.background,
                "findings": [{"id": s.id, "title": s.title, "thresholds": s.thresholds,
                              "rule_source": s.rule.source} for s in t.specs]}
    known = ", ".join(list(TOPICS) + list(SPECS))
    raise UsageError(f"unknown topic or finding id {what!r}; known: {known}")


def explain(what: str, fmt: str, out: TextIO) -> None:
    data = explain_data(what)
    if fmt == "json":
        from netdiag.render.json import dump

        dump(data, out)
        return
    import textwrap

    def para(label: str, text: str) -> None:
        out.write(f"{label}\n")
        out.write(textwrap.fill(text, width=78, initial_indent="  ",
                                subsequent_indent="  ") + "\n\n")

    if "id" in data:
        out.write(f"{data['id']}: {data['title']}\n\n")
        para("RULE", data["rule"]["text"])
        para("SOURCE", data["rule"]["source"])
        para("WHY", data["explanation"])
        para("WHAT TO DO", data["recommendation"])
        para("WHEN IT FIRES", data["thresholds"])
    else:
        out.write(f"{data['topic']}: {data['summary']}\n\n")
        para("BACKGROUND", data["background"])
        out.write("FINDINGS\n")
        for f in data["findings"]:
            out.write(f"  {f['id']}: {f['title']}\n")
            out.write(textwrap.fill(f["thresholds"], width=78, initial_indent="      ",
                                    subsequent_indent="      ") + "\n")
        out.write("\nRun `netdiag explain ID` for the rule behind one finding.\n")
