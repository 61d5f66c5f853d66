"""Every console example of the documentation, printed again by gbcli itself.

A ```console block in README.md or docs/*.md holds commands (`$ gbcli ...` lines) and what they print. This script
runs each command in-process, at 80 columns with NO_COLOR, on the tiny models the test suite trains
(tests/conftest.get_tiny_models), and writes what it printed under the command:

    python docs/generate.py            # rewrite the pages
    python docs/generate.py --check    # exit 1, with a diff, where a page differs from what gbcli prints now

tests/test_docs.py runs the check, so a change to a view fails the tests until its pages are regenerated.

The commands run in a scratch folder that holds the tiny models as `tiny-gpt2`, `tiny-bert` and `tiny-bart` (the
default models there: GBCLI_GPT=tiny-gpt2 GBCLI_BERT=tiny-bert GBCLI_BART=tiny-bart) and the files of
docs/examples/. A command line may start with NAME=VALUE variables (`COLUMNS=120 gbcli ...`), continue over lines
ending in `\\`, read stdin with `< FILE`, and end in a comment; `# exits N` there says the command fails on purpose
(any other failure stops the script). Blocks that are not console blocks are not touched: an example that cannot
run here (a server in the background, torchrun, a download) is a ```text block.

Timings differ from run to run, so each is replaced by `…`, keeping the width of the line (the only edit made to
what gbcli prints; see TIMINGS).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"
# The libraries the pages were printed with: the tiny models are trained anew for other versions, and print other
# numbers, so the check is meaningful only with these (tests/test_docs.py skips otherwise).
LIBRARIES = ("torch", "transformers", "tokenizers")
VERSIONS = REPO / "docs" / "examples" / "printed-with.txt"
MODEL_FOLDERS = {"gpt": "tiny-gpt2", "bert": "tiny-bert", "bart": "tiny-bart"}
ENV = {
    "NO_COLOR": "1",
    "COLUMNS": "80",
    "LINES": "50",
    "GBCLI_NO_SERVER": "1",
    "HF_HUB_OFFLINE": "1",
    # The user's own settings and caches stay out: a settings file and a cache of states of the scratch folder's own.
    "GBCLI_CONFIG": "gbcli-config.toml",
    "GBCLI_CACHE_DIR": "gbcli-cache",
    **{f"GBCLI_{family.upper()}": folder for family, folder in MODEL_FOLDERS.items()},
}

# What differs between two runs of the same command: the time it took. Each pattern's number groups become `…`.
TIMINGS = [
    re.compile(r"(\d+\.\d) tokens/s \((\d+\.\d+) s\)"),  # generate's speed row
    re.compile(r"(?:GPT|BERT|BART) (\d+\.\d+) s in \d+ forward pass"),  # score's time line
]

BORDERS = ("│", "┃", "║")
FENCE = re.compile(r"^```console\n(.*?)^```\n", re.M | re.S)
EXIT_NOTE = re.compile(r"#\s*exits?\s+(\d+)")


@dataclass(frozen=True)
class Command:
    shown: str  # the command as the page writes it, continuation lines included
    args: list[str]
    env: dict[str, str]
    stdin: str | None
    exit_code: int


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def parse_commands(block: str) -> list[Command]:
    """The `$ ` lines of a console block (with their continuation lines), as commands to run."""
    commands: list[Command] = []
    lines = block.splitlines()
    k = 0
    while k < len(lines):
        if not lines[k].startswith("$ "):
            k += 1
            continue
        shown = [lines[k]]
        while shown[-1].endswith("\\") and k + 1 < len(lines):
            k += 1
            shown.append(lines[k])
        k += 1
        commands.append(parse_command("\n".join(shown)))
    return commands


def parse_command(shown: str) -> Command:
    text = shown[2:].replace("\\\n", " ")
    note = EXIT_NOTE.search(text)
    words = shlex.split(text, comments=True)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    stdin = None
    if "<" in words:
        at = words.index("<")
        stdin = (EXAMPLES / words[at + 1]).read_text(encoding="utf-8")
        del words[at : at + 2]
    if not words or words[0] != "gbcli":
        raise SystemExit(f"docs/generate.py runs gbcli commands only, not: {shown}")
    return Command(shown, words[1:], env, stdin, int(note.group(1)) if note else 0)


def elide_numbers(match: re.Match[str]) -> str:
    """The match with its number groups as `…`."""
    text, shift = match.group(0), match.start(0)
    for group in reversed(range(1, (match.re.groups or 0) + 1)):
        begin, end = match.start(group) - shift, match.end(group) - shift
        text = text[:begin] + "…" + text[end:]
    return text


def normalise_line(line: str) -> str:
    """A line with its timings elided; inside a box, padded back to its width so that the border stays put."""
    boxed = line.endswith(BORDERS)
    for pattern in TIMINGS:
        line = pattern.sub(lambda match: elide_numbers(match).ljust(len(match.group(0)) if boxed else 0), line)
    return line.rstrip()


def normalise(output: str) -> str:
    return "\n".join(normalise_line(line) for line in output.splitlines())


def run(command: Command) -> str:
    from typer.testing import CliRunner

    from gbcli.cli import app

    runner = CliRunner(env={**ENV, **command.env})
    result = runner.invoke(app, command.args, input=command.stdin, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise RuntimeError(f"{command.shown} raised {result.exception!r}") from result.exception
    if result.exit_code != command.exit_code:
        raise SystemExit(
            f"{command.shown}\nexited {result.exit_code}, not {command.exit_code} "
            f"(a failure on purpose is marked `# exits N`):\n{result.output}"
        )
    return normalise(result.output)


def render_block(block: str) -> str:
    parts = []
    for command in parse_commands(block):
        output = run(command)
        parts.append(command.shown + ("\n" + output if output else ""))
    return "\n".join(parts) + "\n"


def render_page(text: str) -> str:
    return FENCE.sub(lambda match: "```console\n" + render_block(match.group(1)) + "```\n", text)


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A folder with the tiny models under their documented names and the example files, as the working folder."""
    sys.path.insert(0, str(REPO))
    from tests.conftest import get_tiny_models

    models = get_tiny_models()
    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="gbcli-docs-") as folder:
        here = Path(folder)
        for family, name in MODEL_FOLDERS.items():
            (here / name).symlink_to(models[family], target_is_directory=True)
        for example in EXAMPLES.iterdir() if EXAMPLES.is_dir() else []:
            shutil.copy(example, here / example.name)
        os.chdir(here)
        try:
            yield here
        finally:
            os.chdir(before)


def changed_pages() -> dict[Path, tuple[str, str]]:
    """Each page whose console blocks differ from what gbcli prints now: (the page, the page as it should be)."""
    changed = {}
    with scratch_folder():
        for page in pages():
            text = page.read_text(encoding="utf-8")
            fresh = render_page(text)
            if fresh != text:
                changed[page] = (text, fresh)
    return changed


def diff(page: Path, text: str, fresh: str) -> str:
    name = str(page.relative_to(REPO))
    return "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), fresh.splitlines(keepends=True), name, name + " (as gbcli prints it now)"
        )
    )


def library_versions() -> str:
    from importlib.metadata import version

    return "".join(f"{name}=={version(name)}\n" for name in LIBRARIES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 with a diff if a page differs")
    options = parser.parse_args()
    changed = changed_pages()
    for page, (text, fresh) in changed.items():
        if options.check:
            sys.stdout.write(diff(page, text, fresh))
        else:
            page.write_text(fresh, encoding="utf-8")
            print(f"rewrote {page.relative_to(REPO)}")
    if options.check and changed:
        print(f"\n{len(changed)} page(s) differ from what gbcli prints now: run python docs/generate.py")
        return 1
    if not options.check:
        VERSIONS.write_text(library_versions(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
