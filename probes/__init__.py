"""BPF C programs for `netdiag probe` (installed as the package ``netdiag.probes``)."""
