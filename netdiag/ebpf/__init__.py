"""eBPF probes through bcc: requirements, tracepoint formats, loading, reading out."""
