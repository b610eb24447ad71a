"""Text from the system is data: a process name, an interface, a sysctl value or a file name
may hold rich markup ("[/]"), terminal escape sequences or undecodable bytes. Renderers pass
every such string through here before a terminal sees it."""

from __future__ import annotations

import errno
import re
from typing import Any

# C0 controls (tab and newline included: a cell is one line), DEL, C1 controls, lone
# surrogates (bytes that were not valid UTF-8, kept by surrogateescape), and the invisible
# characters that reorder or hide text (bidi embeddings, overrides and isolates such as
# U+202E, zero-width characters, line and paragraph separators, the byte-order mark,
# interlinear annotation): a name must read as what it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200b-\u200f\u2028-\u202e"
                     "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")


def _escape(m: re.Match) -> str:
    ch = m.group()
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape'd byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# netdiag's own symbols and what stands for them on an output that cannot encode them
# (PYTHONIOENCODING=ascii, a locale that is not UTF-8): plain ASCII, so that "\xNN" keeps
# meaning one thing, a byte from the system that was not valid UTF-8.
ASCII_FALLBACK = {
    "·": ".", "…": "...", "─": "-", "—": "--", "–": "-", "✓": "ok", "✗": "x", "×": "x",
    "→": "->", "←": "<-", "↔": "<->", "≥": ">=", "≤": "<=", "≈": "~", "µ": "u", "§": "sect.",
    "↺": "*", "‘": "'", "’": "'", "“": '"', "”": '"', "±": "+/-",
    "▁": "_", "▂": ".", "▃": "-", "▄": ":", "▅": "=", "▆": "+", "▇": "*", "█": "#",
}
ENCODE_ERRORS = "netdiag-ascii"


def _encode_fallback(exc: UnicodeError) -> tuple[str, int]:
    """Error handler for text streams: netdiag's symbols become their ASCII stand-ins; any
    other character the stream cannot encode becomes \\uNNNN (never \\xNN, which is for
    undecodable bytes)."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start:exc.end]:
        sub = ASCII_FALLBACK.get(ch)
        if sub is None:
            code = ord(ch)
            sub = f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
        out.append(sub)
    return "".join(out), exc.end


def register_fallback() -> str:
    """Register the handler (codecs) and return its name, for stream.reconfigure(errors=)."""
    import codecs

    codecs.register_error(ENCODE_ERRORS, _encode_fallback)
    return ENCODE_ERRORS


def clean(value: object) -> str:
    """The string with control characters and undecodable bytes shown as escapes."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)


def quoted(value: object) -> str:
    """A user's word in a message, in quotes: undecodable bytes as \\xNN (not repr's
    '\\udcff'), control and bidi characters escaped."""
    return f"'{clean(value)}'"


def safe(value: object, style: str = "") -> Any:
    """A rich Text (never parsed as markup) of the cleaned string."""
    from rich.text import Text  # here, so that clean() costs no rich import (nagios)

    return Text(clean(value), style=style)


_CONSOLE: Any = None


def SafeConsole(**kw: Any) -> Any:  # noqa: N802 (used like the class it makes)
    """A rich Console for netdiag's output: a reader that went away is a BrokenPipeError like
    any other write error (netdiag says so and exits 3), never rich's own SystemExit(1),
    which monitoring would read as WARNING."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        class _SafeConsole(Console):
            def on_broken_pipe(self) -> None:
                self.quiet = True
                raise BrokenPipeError(errno.EPIPE, "the reader closed the output")

        _CONSOLE = _SafeConsole
    return _CONSOLE(**kw)
