"""netdiag: explain what the Linux TCP stack is doing, against the documented kernel rules."""

from __future__ import annotations

__version__ = "0.1.0"
