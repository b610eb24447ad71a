"""`netdiag explain`: the documented rule behind a topic or finding id, the socket-programming
concepts behind the symptoms, and the causes `netdiag why` weighs. Offline."""

from __future__ import annotations

import difflib
from typing import Any, TextIO

from netdiag.errors import UsageError
from netdiag.render._safe import quoted
from netdiag.rules import SPECS, TOPICS


def _schema() -> str:
    from netdiag.render.json import SCHEMA

    return SCHEMA


def _fold(name: str) -> str:
    """Case, "_", "-" and spaces do not matter: TIME_WAIT, time-wait and timewait are one."""
    return "".join(name.lower().replace("_", "").replace("-", "").split())


def _canonical(what: str) -> str | None:
    """The topic, finding id or cause id `what` names, whatever its case or separators."""
    from netdiag.diagnose.symptoms import CAUSES

    names = [*SPECS, *TOPICS, *(f"why.{c}" for c in CAUSES), *CAUSES]
    if what in names:
        return what
    folded = {_fold(n): n for n in names}
    return folded.get(_fold(what))


def explain_data(what: str) -> dict:
    """The JSON of `explain --json` (docs/schema/netdiag.schema.json: explain_finding,
    explain_topic, explain_concept, explain_cause, explain_list). Names are matched whatever
    their case ("TIMEWAIT", "Time_Wait"); a symptom (an errno such as ECONNRESET) is answered
    by `netdiag why`, which the error says."""
    from netdiag.concepts import BY_NAME, normalise

    name = _canonical(what)
    if name is None and BY_NAME.get(normalise(what)) is None:
        folded = {_fold(k): k for k in BY_NAME}
        name = folded.get(_fold(what))
    what = name or what
    if what in SPECS:
        s = SPECS[what]
        return {"schema": _schema(), "id": s.id, "topic": s.topic, "title": s.title,
                "rule": {"text": s.rule.text, "source": s.rule.source},
                "explanation": s.explanation, "recommendation": s.recommendation,
                "thresholds": s.thresholds, "counters": list(s.counters)}
    if what in TOPICS:
        t = TOPICS[what]
        return {"schema": _schema(), "topic": t.name, "summary": t.summary,
                "background": t.background,
                "findings": [{"id": s.id, "title": s.title, "thresholds": s.thresholds,
                              "rule_source": s.rule.source} for s in t.specs]}
    concept = BY_NAME.get(normalise(what))
    if concept is not None:
        return {"schema": _schema(), "concept": concept.name, "title": concept.title,
                "text": concept.text, "observe": concept.observe, "source": concept.source,
                "aliases": list(concept.aliases)}
    from netdiag.diagnose.symptoms import CAUSES, SYMPTOMS, find

    cid = what[4:] if what.startswith("why.") else what
    if cid in CAUSES:
        c = CAUSES[cid]
        symptom = next(s for s in SYMPTOMS if c in s.causes)
        return {"schema": _schema(), "cause": f"why.{c.id}", "symptom": symptom.name,
                "title": c.title, "mechanism": c.mechanism,
                "rule": {"text": c.rule.text, "source": c.rule.source},
                "recommendation": c.action}
    symptom = find(what)
    if symptom is not None:
        causes = ", ".join(f"why.{c.id}" for c in symptom.causes[:3])
        more = ", ..." if len(symptom.causes) > 3 else ""
        raise UsageError(
            f"{quoted(what)} is a symptom ({symptom.name}: {symptom.title}): `netdiag why "
            f"{symptom.name}` weighs its causes on this host; `netdiag explain why.CAUSE` "
            f"explains one ({causes}{more}); `netdiag explain errno` what the calls return")
    raise UsageError(f"unknown topic, finding id or concept {quoted(what)}{_suggest(what)} "
                     "(`netdiag explain` lists them)")


def _suggest(what: str) -> str:
    """Nearest names, whatever the case: "; did you mean X, Y?" or ""."""
    from netdiag.diagnose.symptoms import SYMPTOMS

    names = {_fold(n): n for n in _names()}
    whys = {_fold(s.name): f"netdiag why {s.name}" for s in SYMPTOMS}
    near = difflib.get_close_matches(_fold(what), [*names, *whys], n=3, cutoff=0.6)
    if not near:
        return ""
    return f"; did you mean {', '.join(names.get(n) or whys[n] for n in near)}?"


def _names() -> list[str]:
    from netdiag.concepts import BY_NAME
    from netdiag.diagnose.symptoms import CAUSES

    return [*TOPICS, *SPECS, *BY_NAME, *(f"why.{c}" for c in CAUSES)]


def listing() -> dict[str, Any]:
    """`netdiag explain` alone: what can be explained."""
    from netdiag.concepts import CONCEPTS

    return {"schema": _schema(),
            "topics": [{"topic": t.name, "summary": t.summary,
                        "findings": [s.id for s in t.specs]} for t in TOPICS.values()],
            "concepts": [{"concept": c.name, "title": c.title} for c in CONCEPTS],
            "symptoms": "netdiag why (without a symptom) lists the symptoms and their causes; "
                        "netdiag explain why.CAUSE explains one cause"}


def explain(what: str | None, fmt: str, out: TextIO) -> None:
    data = listing() if what is None else explain_data(what)
    if fmt == "json":
        from netdiag.render.json import dump

        dump(data, out)
        return
    import textwrap

    def para(label: str, text: str) -> None:
        out.write(f"{label}\n")
        out.write(textwrap.fill(text, width=78, initial_indent="  ",
                                subsequent_indent="  ") + "\n\n")

    if what is None:
        out.write("TOPICS (netdiag explain TOPIC; each finding: netdiag explain ID)\n")
        for t in data["topics"]:
            out.write(textwrap.fill(f"{t['topic']}: {t['summary']}", width=78,
                                    initial_indent="  ", subsequent_indent="      ") + "\n")
        out.write("\nCONCEPTS (netdiag explain CONCEPT)\n")
        for c in data["concepts"]:
            out.write(f"  {c['concept']}: {c['title']}\n")
        out.write("\nSYMPTOMS: `netdiag why` lists them; `netdiag explain why.CAUSE` explains "
                  "one cause.\n")
    elif "id" in data:
        out.write(f"{data['id']}: {data['title']}\n\n")
        para("RULE", data["rule"]["text"])
        para("SOURCE", data["rule"]["source"])
        para("WHY", data["explanation"])
        para("WHAT TO DO", data["recommendation"])
        para("WHEN IT FIRES", data["thresholds"])
    elif "concept" in data:
        out.write(f"{data['concept']}: {data['title']}\n\n")
        para("WHAT IT IS", data["text"])
        para("WHAT NETDIAG SHOWS OF IT", data["observe"])
        para("SOURCE", data["source"])
    elif "cause" in data:
        out.write(f"{data['cause']}: {data['title']} (a cause of {data['symptom']})\n\n")
        para("WHAT THE KERNEL DOES", data["mechanism"])
        para("RULE", data["rule"]["text"])
        para("SOURCE", data["rule"]["source"])
        para("WHAT TO DO", data["recommendation"])
    else:
        out.write(f"{data['topic']}: {data['summary']}\n\n")
        para("BACKGROUND", data["background"])
        out.write("FINDINGS\n")
        for f in data["findings"]:
            out.write(f"  {f['id']}: {f['title']}\n")
            out.write(textwrap.fill(f["thresholds"], width=78, initial_indent="      ",
                                    subsequent_indent="      ") + "\n")
        out.write("\nRun `netdiag explain ID` for the rule behind one finding.\n")


def print_symptoms(data: dict[str, Any], fmt: str, out: TextIO) -> None:
    """`netdiag why` without a symptom: the symptoms it knows, as a table or JSON."""
    if fmt == "json":
        from netdiag.render.json import dump

        dump({"schema": _schema(), **data}, out)
        return
    from netdiag.render.table import render_rows

    render_rows("symptoms (netdiag why SYMPTOM [--port P] [--peer IP] [--pid PID])", [
        {"symptom": s["name"], "what applications say": s["title"],
         "also": ", ".join(w for w in s["words"] if w != s["name"].lower()),
         "causes weighed": len(s["causes"])} for s in data["symptoms"]], out)
