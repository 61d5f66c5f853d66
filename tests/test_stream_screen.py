"""What a terminal shows while `generate` streams and after Ctrl-C is typed: read back through a terminal emulator."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios
import time

import pyte
import pytest

from tests.cli_helpers import TRACEBACK, gbcli_executable, read_terminal_until

ROWS, COLUMNS = 14, 80


class Terminal:
    """gbcli on a pseudo-terminal of ROWS x COLUMNS; everything it writes, replayed by a terminal emulator."""

    def __init__(self, *args: str) -> None:
        self.output = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ.update(COLUMNS=str(COLUMNS), LINES=str(ROWS), GBCLI_NO_SERVER="1", TERM="xterm-256color")
            os.environ.pop("NO_COLOR", None)
            os.execv(gbcli_executable(), ["gbcli", *args])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))

    def read(self, seconds: float, until: bytes | None = None) -> None:
        # A NUL byte never reaches a terminal from gbcli (control characters are shown escaped): "read it all".
        self.output += read_terminal_until(self.fd, until or b"\x00", seconds)

    def screen(self) -> list[str]:
        """What the screen showed after the last whole frame: the output up to where the newest redraw begins
        (Rich's live display starts each one by moving the cursor back up: CR, erase line, cursor up), so that a
        frame still arriving in pieces is never read half drawn."""
        output = self.output
        redraw = output.rfind(b"\r\x1b[2K\x1b[1A")
        screen = pyte.Screen(COLUMNS, ROWS)
        pyte.ByteStream(screen).feed(output[:redraw] if redraw > 0 else output)
        return [line.rstrip() for line in screen.display]

    def scrollback_and_screen(self) -> list[str]:
        """Every line the user can scroll back to, then the screen."""
        screen = pyte.HistoryScreen(COLUMNS, ROWS, history=100_000)
        pyte.ByteStream(screen).feed(self.output)
        history = ["".join(line[i].data for i in sorted(line)) for line in screen.history.top]
        return [line.rstrip() for line in history + screen.display]

    def wait(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.read(0.2)
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.read(0.5)
                return os.waitstatus_to_exitcode(status)
        pytest.fail(f"gbcli did not end within {seconds} s of Ctrl-C")

    def close(self) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        os.close(self.fd)


CURSOR = "▌"


def test_typed_ctrl_c_leaves_one_whole_panel_and_the_newest_tokens_stay_in_view(long_context_gpt):
    """The live panel outgrows the screen: the screen keeps showing the newest tokens (the cursor), and after Ctrl-C
    is typed (the terminal echoes it) the panel is on screen once, whole, with one top border and no `^C`."""
    terminal = Terminal(
        "generate",
        "once upon a time",
        "--models",
        "gpt",
        "--gpt",
        str(long_context_gpt),
        "--max-new-tokens",
        "4000",
        "--seed",
        "1",
    )
    try:
        terminal.read(120, until=CURSOR.encode())
        assert CURSOR.encode() in terminal.output, terminal.output[-500:]
        # Stream until a whole frame shows the text growing (the cursor) and its first line has scrolled away.
        deadline, first_line = time.monotonic() + 60, "│ once upon a time"
        while True:
            terminal.read(0.3)
            live = terminal.screen()
            streaming = any(CURSOR in line for line in live)
            if (streaming and not any(line.startswith(first_line) for line in live)) or time.monotonic() > deadline:
                break
        os.write(terminal.fd, b"\x03")  # Ctrl-C typed on the keyboard, echoed by the terminal unless gbcli stops it
        code = terminal.wait(60)
        echo_restored = bool(termios.tcgetattr(terminal.fd)[3] & termios.ECHO)
    finally:
        terminal.close()
    assert code == 130
    # While it streams, the live frame fits the screen and shows where the text grows: its top border and cursor.
    assert any("GPT ·" in line for line in live), live
    assert any(CURSOR in line for line in live), live
    everything = terminal.scrollback_and_screen()
    text = "\n".join(everything)
    assert TRACEBACK not in text and "interrupted" in text
    assert "^C" not in text
    tops = [index for index, line in enumerate(everything) if line.startswith("╭") and "GPT ·" in line]
    assert len(tops) == 1, text
    bottom = next(index for index in range(tops[0], len(everything)) if everything[index].startswith("╰"))
    body = everything[tops[0] + 1 : bottom]
    # The whole interrupted text from its first line (which the live frame had let go), not only the last frame.
    assert len(body) > ROWS - 3
    assert all(line.startswith("│") and line.endswith("│") for line in body), text
    assert body[0].startswith("│ once upon a time")
    assert CURSOR not in "".join(body)  # the final frame has no cursor
    assert "(interrupted)" in " ".join(body)  # the text cut short is marked, as piped output marks it
    assert echo_restored  # the terminal echoes keys again after gbcli ends
