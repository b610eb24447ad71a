"""Package discovery: every package under netdiag/, plus the BPF C sources of probes/ (kept at
the repository root) shipped as the package netdiag.probes. Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["netdiag", "netdiag.*"]), "netdiag.probes"],
    package_dir={"netdiag.probes": "probes"},
)
