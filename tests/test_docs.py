"""The man page and README must cover what the CLI offers."""

from __future__ import annotations

import typer.main

from netdiag.cli import app
from netdiag.rules import SPECS

from conftest import REPO

MAN = (REPO / "man" / "netdiag.1").read_text()
README = (REPO / "README.md").read_text()


def _plain(text: str) -> str:
    return text.replace("\\-", "-")


def test_man_page_covers_every_command_and_option():
    group = typer.main.get_command(app)
    man = _plain(MAN)
    for name, command in group.commands.items():
        assert f".B {name}" in man or f".B netdiag {name}" in man or f"{name}\n" in man, name
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in man, f"{name} {opt} missing from man/netdiag.1"


def test_every_finding_id_is_documented():
    for fid in SPECS:
        assert fid in MAN, f"{fid} missing from man page"
        assert fid in README, f"{fid} missing from README"


def test_readme_quick_start_has_the_two_commands():
    assert "make run" in README and "make test" in README
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "NETDIAG_REQUIRE_ROOT=1" in ci
