"""`gbcli shell`: load the models once, then read command lines in a loop, each answered in a fraction of a second.

Every line runs the CLI's own command (the Typer app, in this process), so its options and output are the CLI's.
The shell adds session defaults (`set`, the shell's own model options), a few words of its own (help, models,
set, unset, load, exit) and line editing with history and completion from prompt_toolkit on a terminal. Off a
terminal it reads stdin without a prompt or colour: a batch runner.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from rich.console import Console
from rich.table import Table

from gbcli.errors import INTERRUPTED, GbcliError, usage_error
from gbcli.render.common import dumps, stderr_console
from gbcli.render.messages import commands_typed_bare, report_error
from gbcli.terminal import interrupt_raises
from gbcli.warm.client import strip_no_server
from gbcli.warm.runner import (
    command_tree,
    hosted,
    loaded_models,
    model_table,
    models_kept_loaded,
    options_of,
    run_command_line,
)

BUILTINS: dict[str, str] = {
    "help": "this list; `help COMMAND` shows the command's options",
    "models": "the models loaded, their device, dtype, memory and idle time",
    "set": "`set OPTION VALUE`: a default for every command that takes --OPTION (`set top-k 10`, "
    "`set models gpt,bert,bart`); `set` alone lists them",
    "unset": "`unset OPTION`: drop a default",
    "load": "`load --bert PATH` (or --gpt, --bart): load a model now and make it the session's default",
    "clear": "clear the screen",
    "exit": "leave the shell (also quit, or Ctrl-D)",
}
MASKS = ("[MASK]", "<mask>")
MODEL_FLAGS = ("--gpt", "--bert", "--bart")
OPTION_LIKE = re.compile(r"^(--[a-z][a-z0-9-]*(=.*)?|-[a-zA-Z])$")


def history_path() -> Path:
    """Where the shell's history is kept: the user's data folder (XDG_DATA_HOME, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "gbcli" / "shell_history"


@dataclass
class Session:
    """The shell's state: option defaults added to every command that accepts them, and the output mode."""

    defaults: dict[str, str | bool] = field(default_factory=dict)  # option name (no dashes) -> value
    json_lines: bool = False
    failed_code: int = 0  # the exit code of the last command that failed (the batch's exit code)

    def command_line(self, args: list[str]) -> list[str]:
        """The user's ARGS with the session defaults the command accepts and the user did not give."""
        command = command_tree().commands.get(args[0]) if args else None
        if command is None:
            return args
        given = {arg.split("=", 1)[0] for arg in args[1:] if arg.startswith("-")}
        extra: list[str] = []
        wanted = dict(self.defaults)
        if self.json_lines:
            wanted["json"] = True
        for name, value in wanted.items():
            option = find_option(command, name)
            if option is None or given & set(option.opts + option.secondary_opts):
                continue
            if option.is_flag:
                if "--" + name in option.secondary_opts:  # `set no-bos` is `set bos off`
                    value = not value
                if value is True:
                    extra.append(option.opts[0])
                elif option.secondary_opts:
                    extra.append(option.secondary_opts[0])
            else:
                extra += [long_flag(option), str(value)]
        return [args[0], *extra, *args[1:]]


def find_option(command: Any, name: str) -> Any:
    flag = "--" + name.lstrip("-")
    return next((option for option in options_of(command) if flag in option.opts + option.secondary_opts), None)


def long_flag(option: Any) -> str:
    return next((opt for opt in option.opts if opt.startswith("--")), option.opts[0])


def option_names() -> list[str]:
    """Every --option of every command, without its dashes: what `set` accepts."""
    names = {
        opt[2:]
        for command in command_tree().commands.values()
        for option in options_of(command)
        for opt in option.opts + option.secondary_opts
        if opt.startswith("--")
    }
    names.discard("help")
    return sorted(names)


def split_line(line: str) -> list[str]:
    """A command line in words, or a bare text as the command that suits it: fill-mask with a mask, else compare."""
    if "\x00" in line:  # as on the command line, where no argument can hold one (the system's argv ends there)
        raise usage_error(
            "The line holds a NUL byte: no command line can.",
            "Remove it; a text with a NUL byte is binary data, not text.",
        )
    stripped = line.strip()
    head, *rest = stripped.split(maxsplit=1)
    if head == "--no-server":  # as `gbcli --no-server COMMAND`: the shell runs in-process anyway
        stripped = rest[0] if rest else "help"  # `gbcli --no-server` alone shows the commands
    first = stripped.split(maxsplit=1)[0]
    if first in command_tree().commands or first in BUILTINS or first in {"quit", "?"}:
        try:
            return shlex.split(stripped)
        except ValueError as exc:
            raise usage_error(
                f"Cannot split the line into words: {exc}.", "Close the quotes, or escape them with a backslash."
            ) from None
    words = stripped.split()
    known = [*command_tree().commands, *BUILTINS]
    # Case kept: a capitalised first word begins a sentence ("Stop the war"), not a command. A lone word may be further
    # from a name than the first word of a line of text ("She went home" is no `shell`).
    close = difflib.get_close_matches(first, known, n=1, cutoff=0.75 if len(words) == 1 else 0.85)
    text_command = "fill-mask" if any(mask in stripped for mask in MASKS) else "compare"
    # A first word one typo away from a command is a command mistyped, not the first word of a text; so is a word
    # followed by options. A text that does begin so is still run when its command is named.
    if close or any(OPTION_LIKE.match(word) for word in words[1:]):
        as_text = f"To run the line as a text: {text_command} {shlex.quote(stripped)}" if len(words) > 1 else ""
        raise usage_error(
            f"No such command '{first}'.",
            " ".join(filter(None, [f"Did you mean {close[0]}?" if close else "", as_text]))
            or "Type `help` for the commands; a line of text alone is run by fill-mask or compare.",
        )
    return [text_command, stripped]


class _BatchInterrupted(Exception):
    """Ctrl-C in a batch (`gbcli shell < commands.txt`), already reported: the batch ends with exit code 130."""


class Shell:
    def __init__(self, session: Session, interactive: bool) -> None:
        self.session = session
        self.interactive = interactive

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self, lines: Iterable[str]) -> int:
        # `shell` is no command here ("This is the gbcli shell already" stays as it is).
        with commands_typed_bare(set(command_tree().commands) - {"shell"}):
            return self._run(lines)

    def _run(self, lines: Iterable[str]) -> int:
        try:
            for line in lines:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    if self.run_line(line) == "exit":
                        break
                except GbcliError as error:
                    self.session.failed_code = error.exit_code
                    _report(error)
                    words = _words(line)
                    # A command line the shell refuses (an unknown command) is a failed command too; the shell's
                    # own words (set, load...) print no document, failed or not.
                    if self.session.json_lines and words and words[0] not in {*BUILTINS, "quit", "?"}:
                        _print_json_line("", words, error.exit_code)
                except KeyboardInterrupt:  # between two steps of the shell itself: back to the prompt
                    _stderr().print("[yellow]interrupted[/]")
                    if not self.interactive:
                        raise _BatchInterrupted from None
        except _BatchInterrupted:
            return INTERRUPTED
        except KeyboardInterrupt:  # a batch waiting for its next line
            _stderr().print("[yellow]interrupted[/]")
            return INTERRUPTED
        return 0 if self.interactive else self.session.failed_code

    def run_line(self, line: str) -> str | None:
        args = split_line(line)
        word = args[0]
        if word in {"exit", "quit"}:
            return "exit"
        if word == "shell":  # a shell inside the shell would read the lines meant for this one
            raise usage_error("This is the gbcli shell already.", "Type a command here, or exit to leave it.")
        if word in {"help", "?"}:
            self.help(args[1:])
        elif word == "clear":
            if self.interactive and not self.session.json_lines:
                _out(self.session).clear()
        elif word == "models":
            self.show_models()
        elif word == "set":
            self.set(args[1:])
        elif word == "unset":
            for name in args[1:]:
                self.session.defaults.pop(name.lstrip("-"), None)
        elif word == "load":
            self.load(args[1:])
        else:
            self.run_command(args)
        return None

    def run_command(self, args: list[str]) -> None:
        args, _ = strip_no_server(args)  # a line copied from the command line: the shell runs in-process anyway
        full = self.session.command_line(args)
        if not self.session.json_lines:
            code = run_command_line(full)
        else:
            # One JSON document per command and line, whatever the command prints (a document or JSON Lines).
            captured = io.StringIO()
            with contextlib.redirect_stdout(captured):
                code = run_command_line(full)
            _print_json_line(captured.getvalue(), args, code)
        if code != 0:
            self.session.failed_code = code
        if code == INTERRUPTED and not self.interactive:
            raise _BatchInterrupted  # Ctrl-C ends a batch, as it ends a shell script: not only its current line

    # -- the shell's own words -----------------------------------------------------------------------------------
    def help(self, topic: list[str]) -> None:
        if topic and topic[0] in command_tree().commands:
            run_command_line([topic[0], "--help"])
            return

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for name, command in command_tree().commands.items():
            table.add_row(name, command.get_short_help_str(limit=70))
        for name, text in BUILTINS.items():
            table.add_row(name, text)
        console = _out(self.session)
        console.print("Commands (as on the command line, without `gbcli`), and the shell's own words:")
        console.print(table)
        console.print(
            "A line of text alone runs fill-mask on it if it holds [MASK] or <mask>, compare otherwise; one whose "
            "first word is a command's name mistyped (atention) is refused: name the command to run it as a text.",
            markup=False,
        )
        if self.session.defaults:
            console.print("Session defaults: " + defaults_text(self.session.defaults), markup=False)

    def show_models(self) -> None:
        entries = loaded_models()
        if self.session.json_lines:
            print(dumps(entries, indent=None), flush=True)
            return
        console = _out(self.session)
        if not entries:
            console.print("No model is loaded yet: the first command that needs one loads it.")
            return
        console.print(model_table(entries))

    def set(self, args: list[str]) -> None:
        if not args:
            _out(self.session).print(defaults_text(self.session.defaults) or "No session defaults.", markup=False)
            return
        name = args[0].lstrip("-").lower()
        names = option_names()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=2, cutoff=0.7)
            raise usage_error(
                f"No command has an option --{name}.",
                f"Did you mean {' or '.join(close)}?" if close else "`help COMMAND` lists a command's options.",
            )
        flags = [find_option(command, name) for command in command_tree().commands.values()]
        is_flag = any(option is not None and option.is_flag for option in flags)
        if is_flag:
            value: str | bool = _parse_switch(args[1] if len(args) > 1 else "on", name)
        elif len(args) != 2:
            raise usage_error(f"`set {name}` takes one value.", f"For example: set {name} VALUE")
        else:
            value = args[1]
        if name == "models":
            hosted().parse_models(str(value))  # refuse a bad list now rather than on every command
        self.session.defaults[name] = value

    def load(self, args: list[str]) -> None:
        """`load --bert PATH`: the new model becomes the default at once; a failure keeps the old one."""
        if len(args) % 2 or not args:
            raise usage_error("`load` takes a model option and its value.", "For example: load --bert ./tiny-bert")
        chosen = dict(zip(args[::2], args[1::2], strict=True))
        unknown = [flag for flag in chosen if flag not in MODEL_FLAGS + ("--device", "--dtype")]
        if unknown:
            raise usage_error(
                f"`load` does not know {unknown[0]}.", "Use --gpt, --bert or --bart (and --device, --dtype)."
            )
        # Tried on a copy of the defaults: a load that fails leaves the session as it was, --device/--dtype included.
        trial = Session(
            defaults={
                **self.session.defaults,
                **{flag[2:]: chosen[flag] for flag in ("--device", "--dtype") if flag in chosen},
            }
        )
        preload(trial, [], {}, strict=True)  # a bad --device or --dtype is refused even with no model to load
        for flag in MODEL_FLAGS:
            if flag in chosen:
                family = flag[2:]
                preload(trial, [family], {family: chosen[flag]}, strict=True)
                trial.defaults[family] = chosen[flag]
        self.session.defaults = trial.defaults


def defaults_text(defaults: dict[str, str | bool]) -> str:
    return ", ".join(f"{name}={value}" for name, value in defaults.items())


def _parse_switch(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in {"on", "true", "yes", "1"}:
        return True
    if lowered in {"off", "false", "no", "0"}:
        return False
    raise usage_error(f"`set {name}` is on or off, not '{value}'.", f"For example: set {name} on")


def preload(session: Session, families: list[str], specs: dict[str, str | None], *, strict: bool = False) -> None:
    """Load these models now, with the session's device and dtype. A model that fails is reported and the others
    stay usable; with strict, its error is raised instead."""
    load_models = hosted().load_models
    device, dtype = str(session.defaults.get("device", "auto")), str(session.defaults.get("dtype", "auto"))
    load_models([], specs, device, dtype)  # a bad --device or --dtype is refused before any model loads
    for family in families:
        try:
            load_models([family], specs, device, dtype)
        except GbcliError as error:
            if strict:
                raise
            _report(error)


def _words(line: str) -> list[str]:
    """The line in words as the shell splits it, or by spaces where its quotes do not close."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _print_json_line(output: str, args: list[str], code: int) -> None:
    text = output.strip()
    try:
        document = json.loads(text) if text else None
    except json.JSONDecodeError:
        try:  # JSON Lines (score --json, fill-mask --file --json): one list of their records
            document = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            document = {"output": output}
    if code != 0 and document is None:
        document = {"command": args, "exit_code": code}
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _out(session: Session):
    # In --json mode stdout carries only JSON documents: the shell's own messages go to stderr.
    return Console(stderr=session.json_lines, highlight=False)


def _stderr():
    return stderr_console()


def _report(error: GbcliError) -> None:
    report_error(error)


# -- reading lines ---------------------------------------------------------------------------------------------
def stdin_lines() -> Iterator[str]:
    for line in sys.stdin:
        yield line.rstrip("\n")


def terminal_lines(session: Session) -> Iterator[str]:
    """Lines typed at a prompt with editing, history across sessions and completion; Ctrl-C clears the line."""
    path = history_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The history holds every text typed: readable by this user only, as a shell's own history is.
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        history = FileHistory(str(path))
    except OSError:  # a read-only home: history for this session only
        history = InMemoryHistory()
    prompt = PromptSession(history=history, completer=command_completer(), complete_while_typing=False)
    while True:
        try:
            yield prompt.prompt("gbcli> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return


def command_completer():  # a class built on first use, so that prompt_toolkit loads only on a terminal

    class _CommandCompleter(Completer):
        """Commands, then their options, from the click command tree; paths after a model or file option."""

        paths = PathCompleter(expanduser=True)

        def get_completions(self, document, complete_event):
            before = document.text_before_cursor
            words = before.split()
            current = "" if before.endswith((" ", "\t")) or not words else words[-1]
            done = words if current == "" else words[:-1]
            tree = command_tree()
            if not done:
                candidates: list[str] = [*tree.commands, *BUILTINS]
            elif done[0] in {"set", "unset"} and len(done) == 1:
                candidates = option_names()
            elif done[-1] in (*MODEL_FLAGS, "--file", "-f", "--export"):
                yield from self.paths.get_completions(Document(current, len(current)), complete_event)
                return
            elif done[0] == "load":
                candidates = [*MODEL_FLAGS, "--device", "--dtype"]
            elif done[0] in tree.commands and current.startswith("-"):
                command = tree.commands[done[0]]
                candidates = sorted(
                    opt for option in options_of(command) for opt in option.opts + option.secondary_opts
                )
            else:
                return
            for candidate in candidates:
                if candidate.startswith(current):
                    yield Completion(candidate, start_position=-len(current))

    return _CommandCompleter()


def run_shell(session: Session, families: list[str], specs: dict[str, str | None]) -> int:
    """Load the models, then answer lines until exit, Ctrl-D or the end of stdin."""
    interactive = sys.stdin.isatty()
    for family, spec in specs.items():
        if spec:
            session.defaults[family] = spec
    with models_kept_loaded(), _batch_colours(interactive):
        preload(session, families, specs)
        shell = Shell(session, interactive)
        interrupt_raises()
        if interactive:
            _stderr().print("gbcli shell: `help` for commands; Ctrl-D to leave.", markup=False)
            return shell.run(terminal_lines(session))
        return shell.run(stdin_lines())


@contextlib.contextmanager
def _batch_colours(interactive: bool) -> Iterator[None]:
    """Off a terminal the output is for files and pipes: no colour, even where stderr is a terminal."""
    if interactive or "NO_COLOR" in os.environ:
        yield
        return
    os.environ["NO_COLOR"] = "1"
    try:
        yield
    finally:
        os.environ.pop("NO_COLOR", None)
