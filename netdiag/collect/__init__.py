"""Collectors: read raw facts from the kernel into plain dataclasses. They judge nothing."""
