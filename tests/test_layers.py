"""The layering promise: rules see only facts, model and the typed probe results;
renderers only the model."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).parent.parent / "netdiag"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("netdiag")}


def test_rules_import_only_facts_and_model():
    allowed = ("netdiag.facts", "netdiag.model", "netdiag.probefacts")
    for path in (PKG / "rules").glob("*.py"):
        bad = {m for m in imports_of(path)
               if not (m in allowed or m.startswith("netdiag.rules"))}
        assert not bad, f"{path.name} imports {bad}"


def test_renderers_import_only_the_model():
    for path in (PKG / "render").glob("*.py"):
        bad = {m for m in imports_of(path)
               if not (m == "netdiag.model" or m.startswith("netdiag.render"))}
        assert not bad, f"{path.name} imports {bad}"


def test_collectors_do_not_import_rules_or_renderers():
    for path in (PKG / "collect").glob("*.py"):
        bad = {m for m in imports_of(path)
               if m.startswith(("netdiag.rules", "netdiag.render", "netdiag.cli"))}
        assert not bad, f"{path.name} imports {bad}"


def test_diagnose_reads_facts_and_findings_only():
    """`why` weighs what the run collected; like the rules it never reads the system."""
    for path in (PKG / "diagnose").glob("*.py"):
        bad = {m for m in imports_of(path)
               if not (m in ("netdiag.facts", "netdiag.model", "netdiag.probefacts")
                       or m.startswith(("netdiag.rules", "netdiag.diagnose")))}
        assert not bad, f"{path.name} imports {bad}"
