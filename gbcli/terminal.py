"""gbcli's terminal policy in one place: what Ctrl-C does at each moment, and what reaches the terminal.

Ctrl-C, in the order a command meets it:
1. start-up (`gbcli.entry`, which must import nothing, so it keeps its own handler): exit 130 at once, with one
   `interrupted` line, since a KeyboardInterrupt inside an import can abort torch's C++ initialisation;
2. a command's computation (`interrupt_exits_130`): Python's KeyboardInterrupt, so that finished output is kept and
   the command ends with exit 130;
3. a record being written (`deferred_interrupt`): held until the record is out, so that no JSON line is cut in
   half; a second Ctrl-C ends a write stuck on a reader that stopped reading;
4. the shell (`interrupt_raises`): from its first prompt on, Ctrl-C stops the line that runs, never the shell.
The warm client (`gbcli.warm.client`) and server (`gbcli.warm.server`) pass Ctrl-C between processes, and SIGTERM
is handled where a file would be left half-written (`gbcli.render.export`) or a torchrun rank must say which lines
it held (`gbcli.jobs.distributed`): those handlers belong to what they protect.

What reaches the terminal: nothing typed is echoed under a live display (`terminal_echo_off`), NO_COLOR
(`no_color`) keeps every escape code out (colour, bold and dim, and the cursor moves that redraw a line), and no
character of a text or a model's output is ever sent raw
(`visible_text`, `visible_json`): a character Python does not call printable is shown as its escape instead, in
every view, CSV and JSON on a terminal. That covers the control characters (`\\x1b[31m` would recolour the
terminal, `\\x1b]0;…\\x07` retitle it, `\\r` overwrite the line), the bidirectional controls (U+202E would show the
rest of the line backwards), the invisible ones (U+200B zero-width space, U+2060 word joiner, U+FEFF, soft hyphen),
line and paragraph separators, unassigned and private-use code points, and every space but the ASCII one. Tab and
newline keep their meaning. Written to a file or a pipe, data stays exact: a script reading it gets the characters
themselves. (The task that shows a vocabulary piece uses it too, which is why it lives here and not in `render`.)

Progress, one policy for every spinner, bar and live view (on stderr, but generate's live view of its text):
- a terminal: spinners while torch is imported and each model loads, bars for long work (a long text's masked
  copies, a file's lines, probe's states, training), generate's text as it is written; each is gone when its work
  is done (a download says one line per file, on a terminal or not);
- a terminal with NO_COLOR: the same progress on stderr, without a single escape code: each step a spinner would
  name is a plain line ("Loading BERT model bert-base-uncased …"), and each bar's counts (or where generate's
  writing is: "GPT · gpt2: sequence 3 of 30, 41 words so far") a plain line every few seconds once the work has
  run that long (`gbcli.render.progress.PLAIN_EVERY`), a bar's with its rate and the time left. NO_COLOR asks for
  no colour (no-color.org), not for silence: a long computation still says where it is (training says one line
  per evaluation);
- stderr not a terminal (a pipe, a file, a script): no progress, so that a log holds results and messages only
  (a download's one line per file and training's one line per evaluation excepted: they are worth keeping).

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from gbcli.errors import INTERRUPTED


def no_color() -> bool:
    # no-color.org: NO_COLOR set to any non-empty value (as Rich reads it).
    return os.environ.get("NO_COLOR", "") != ""


@contextlib.contextmanager
def interrupt_exits_130() -> Iterator[None]:
    """Restore Python's default SIGINT handling so that Ctrl-C reaches us as KeyboardInterrupt inside torch."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        if previous is not signal.default_int_handler and sys.platform != "win32":
            signal.signal(signal.SIGINT, signal.default_int_handler)
        yield
    finally:
        try:
            signal.signal(signal.SIGINT, previous)
        except (TypeError, ValueError):  # pragma: no cover - not in the main thread
            pass


def interrupt_raises() -> None:
    """From now on Ctrl-C raises KeyboardInterrupt wherever it lands: the command stops and the loop goes on.

    The console script exits at once on Ctrl-C outside a command's computation (gbcli.entry), for fear of an
    import cut half-way; in the shell torch and transformers are imported by now, and a Ctrl-C that lands while a
    model loads, stdin is read or a table is drawn must not end the whole shell.
    """
    if sys.platform != "win32":
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Run the block whole: a SIGINT that arrives meanwhile is raised as KeyboardInterrupt once it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(number: int, frame: Any) -> None:
        if received:  # a second Ctrl-C: the write is stuck (a reader that stopped reading), so stop at once
            os._exit(INTERRUPTED)
        received.append(number)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


@contextlib.contextmanager
def terminal_echo_off() -> Iterator[None]:
    """While a live display redraws itself, keys typed into the terminal are not echoed: the echo of Ctrl-C ("^C")
    lands after the display's last line and, when that line fills the width, wraps it onto a new one, so the
    final redraw starts one line low and leaves a second top border behind. Typed keys still reach the shell."""
    try:
        import termios  # late: platform (not on Windows)
    except ImportError:  # Windows: no termios, and its console does not echo Ctrl-C into the output
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):  # no terminal on stdin (a pipe, a file): nothing echoes
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


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
