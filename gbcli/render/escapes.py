"""What a terminal is never sent raw, in every view: one policy for the tables, the text views, CSV and JSON.

A character Python does not call printable is shown as its escape instead: the control characters (`\\x1b[31m`
would recolour the terminal, `\\x1b]0;…\\x07` retitle it, `\\r` overwrite the line), the bidirectional controls
(U+202E would show the rest of the line backwards), the invisible ones (U+200B zero-width space, U+2060 word
joiner, U+FEFF, soft hyphen), line and paragraph separators, unassigned and private-use code points, and every
space but the ASCII one. Tab and newline keep their meaning. Written to a file or a pipe, data stays exact: a
script reading it gets the characters themselves.

Standard library only: the task that shows a vocabulary piece uses it too.
"""

from __future__ import annotations

KEPT = "\t\n"


def escape_char(ch: str) -> str:
    """`\\x1b`, `\\u202e` or `\\U000e0001`: the escape Python would write for it."""
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible_text(text: str, kept: str = KEPT) -> str:
    """`the\\u202e duck` → `the\\\\u202e duck`: every character that is not printable (but tab and newline) as its
    escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in kept else escape_char(ch) for ch in text)


def visible_json(text: str) -> str:
    """A JSON document as safe on a terminal, and still the same JSON: every character that is not printable
    inside its strings written as a `\\u` escape (outside strings JSON has only ASCII and whitespace)."""
    if text.isprintable():
        return text

    def json_escape(ch: str) -> str:
        code = ord(ch)
        if code < 0x10000:
            return f"\\u{code:04x}"
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

    return "".join(ch if ch.isprintable() or ch in " \n" else json_escape(ch) for ch in text)
