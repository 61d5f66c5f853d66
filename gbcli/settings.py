"""The settings a user keeps: a small TOML file in the user's config folder, read by every command.

Each setting is found, first to last, in: the command's option, its environment variable, this file, the built-in
default. The file is `$GBCLI_CONFIG`, else `$XDG_CONFIG_HOME/gbcli/config.toml`, else `~/.config/gbcli/config.toml`:

    gpt = "distilgpt2"
    device = "cpu"
    auto-serve = false
    keep-alive = "30m"

Only the standard library is used (and `tomli` on Python 3.10, where `tomllib` is missing): the warm client reads
the auto-serve setting before it hands a command to a server, and must start as fast as Python does.
"""

from __future__ import annotations

import os
import re
import sys

from gbcli.errors import GbcliError

TYPE_CHECKING = False  # typing costs a warm command ~4 ms of start-up; annotations here are strings anyway
if TYPE_CHECKING:
    from typing import Any

CONFIG_VARIABLE = "GBCLI_CONFIG"  # the file itself, for tests and for a second set of settings
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
NEVER_WORDS = {"never", "forever", "inf", "-1"}


class Setting:
    """One key of the file: its environment variable, its built-in default, what it means, how it is checked."""

    def __init__(self, key: str, variable: str, default: Any, meaning: str, kind: str = "text") -> None:
        self.key, self.variable, self.default, self.meaning, self.kind = key, variable, default, meaning, kind

    def check(self, value: Any) -> str | None:
        """Why `value` (as TOML read it) cannot be this setting; None when it can."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if not isinstance(value, str):
            return "must be a quoted string"
        if self.kind == "device" and not (value in DEVICES or re.fullmatch(r"cuda:\d+", value)):
            return f"must be one of {', '.join(DEVICES)} (or cuda:N)"
        if self.kind == "dtype" and value not in DTYPES:
            return f"must be one of {', '.join(DTYPES)}"
        if self.kind == "duration":
            try:
                parse_duration(value)
            except ValueError:
                return "must be a duration such as 30m, 90s, 2h or never"
        if self.kind == "text" and not value.strip():
            return "must not be empty"
        return None

    def from_text(self, text: str) -> Any:
        """A value typed on the command line (`gbcli config set KEY TEXT`) or held by the environment variable."""
        if self.kind == "bool":
            word = text.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ValueError("must be true or false (also on/off, yes/no, 1/0)")
        value = text.strip()
        problem = self.check(value)
        if problem:
            raise ValueError(problem)
        return value


SETTINGS: dict[str, Setting] = {
    setting.key: setting
    for setting in (
        Setting("gpt", "GBCLI_GPT", "gpt2", "the causal model (--gpt): a hub id or a local folder"),
        Setting("bert", "GBCLI_BERT", "bert-base-uncased", "the masked model (--bert): a hub id or a local folder"),
        Setting("bart", "GBCLI_BART", "facebook/bart-base", "the seq2seq model (--bart): a hub id or a local folder"),
        Setting(
            "device", "GBCLI_DEVICE", "auto", "where models run (--device): auto, cpu, cuda, cuda:N or mps", "device"
        ),
        Setting(
            "dtype", "GBCLI_DTYPE", "auto", "the weights' type (--dtype): auto, float32, bfloat16 or float16", "dtype"
        ),
        Setting(
            "auto-serve",
            "GBCLI_AUTO_SERVE",
            True,
            "on a terminal, start a warm server by itself when none runs "
            "(--no-server or GBCLI_NO_SERVER=1: no server at all)",
            "bool",
        ),
        Setting(
            "keep-alive",
            "GBCLI_KEEP_ALIVE",
            "10m",
            "how long a server keeps an unused model (--keep-alive): 30m, 90s, 2h or never",
            "duration",
        ),
    )
}


def config_path() -> str:
    """Where the settings live: GBCLI_CONFIG, else $XDG_CONFIG_HOME/gbcli/config.toml, else ~/.config/gbcli/."""
    chosen = os.environ.get(CONFIG_VARIABLE, "").strip()
    if chosen:
        return os.path.expanduser(chosen)
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    if not base or not os.path.isabs(base):  # the XDG rule: a relative value is to be ignored
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "gbcli", "config.toml")


def parse_duration(text: str) -> float | None:
    """`30m`, `90s`, `2h`, `45` (seconds): seconds; `never` (or -1): None. ValueError on anything else."""
    value = text.strip().lower()
    if value in NEVER_WORDS:
        return None
    number, scale = value, 1.0
    for suffix in sorted(DURATION_UNITS, key=len, reverse=True):
        if value.endswith(suffix):
            number, scale = value[: -len(suffix)], DURATION_UNITS[suffix]
            break
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"'{text}' is not a duration such as 30m, 90s, 2h or never")
    return seconds


def _load_toml(data: bytes) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib  # late: start-up (read only when a settings file exists)
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # late: start-up
    return tomllib.loads(data.decode("utf-8"))


def _error(message: str, hint: str) -> Exception:
    return GbcliError(message, hint)


def key_line(text: str, key: str) -> int | None:
    """The line (from 1) where `key = ...` is written at the top of the file, None when it is not."""
    pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("["):
            return None  # past the top: a table's keys are not ours
        if pattern.match(line):
            return number
    return None


class Config:
    """The settings file as read: the values it sets, and the warnings about keys gbcli does not know."""

    def __init__(self, path: str, values: dict[str, Any], warnings: list[str], text: str = "") -> None:
        self.path, self.values, self.warnings, self.text = path, values, warnings, text


def read_config(path: str | None = None) -> Config:
    """The file's settings, each checked: bad TOML or a bad value is a GbcliError naming the file, key and line."""
    path = path or config_path()
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return Config(path, {}, [])
    except OSError as exc:
        raise _error(
            f"Cannot read the settings file {path}: {exc.strerror or exc}.",
            "Check its permissions, or set GBCLI_CONFIG to another file.",
        ) from None
    try:
        text = data.decode("utf-8")
        table = _load_toml(data)
    except UnicodeDecodeError:
        raise _error(f"The settings file {path} is not UTF-8 text.", "Rewrite it as UTF-8 TOML.") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError: "Expected ... (at line 3, column 7)"
        raise _error(
            f"The settings file {path}{toml_error_place(text, str(exc))} is not valid TOML: {exc}.",
            f"Fix or remove that line; `gbcli config --help` lists the keys ({', '.join(SETTINGS)}).",
        ) from None
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in table.items():
        line = key_line(text, key)
        where = f", line {line}" if line else ""
        setting = SETTINGS.get(key)
        if setting is None:
            warnings.append(
                f"the settings file {path}{where} sets '{key}', which gbcli does not know "
                f"(known: {', '.join(SETTINGS)}); it is ignored."
            )
            continue
        problem = setting.check(value)
        if problem:
            raise _error(
                f"The settings file {path}{where}: '{key}' {problem}, not {_shown(value)}.",
                f"Fix that line, or remove it with `gbcli config unset {key}`.",
            )
        values[key] = value
    return Config(path, values, warnings, text)


def toml_error_place(text: str, message: str) -> str:
    """ ", line N (key K)" for a TOML parser's message: the line it names, or the last one at the end of the file."""
    found = re.search(r"line (\d+)", message)
    lines = text.splitlines()
    number = int(found.group(1)) if found else len(lines) if "end of document" in message else 0
    if not 0 < number <= len(lines):
        return ""
    key = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", lines[number - 1])
    return f", line {number}" + (f" (key '{key.group(1)}')" if key else "")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def toml_value(value: Any) -> str:
    """A setting's value as TOML writes it: true/false, or a basic string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def environment_value(setting: Setting) -> Any:
    """The setting's environment variable, read as the file's value would be; None when it is unset or empty.

    GBCLI_NO_SERVER=1 is auto-serve's too (no server at all, so none started either).
    """
    if setting.key == "auto-serve" and os.environ.get("GBCLI_NO_SERVER", "").strip().lower() in TRUE_WORDS:
        return False
    text = os.environ.get(setting.variable, "")
    if not text.strip():
        return None
    try:
        return setting.from_text(text)
    except ValueError as exc:
        raise _error(f"{setting.variable}={text} {exc}.", f"Fix or unset {setting.variable}.") from None


def resolve(key: str, option: Any = None, config: Config | None = None) -> tuple[Any, str]:
    """A setting's value and where it came from ("option", "environment", "file" or "default")."""
    setting = SETTINGS[key]
    if option is not None:
        return option, "option"
    from_environment = environment_value(setting)
    if from_environment is not None:
        return from_environment, "environment"
    config = config if config is not None else read_config()
    if key in config.values:
        return config.values[key], "file"
    return setting.default, "default"


def value(key: str, option: Any = None) -> Any:
    """A setting's value: the option, else the environment variable, else the file, else the default."""
    return resolve(key, option)[0]


def write_setting(key: str, new: Any, path: str | None = None) -> str:
    """Set (or with new=None remove) one top-level key, keeping the rest of the file as it is; returns the path.

    The file is read and checked first (a broken file is not written over), then written whole to a temporary
    file beside it and renamed, so a crash leaves the old file or the new one, never half of one.
    """
    config = read_config(path)
    text = config.text
    lines = text.splitlines()
    line = key_line(text, key)
    if new is None:
        if line is None:
            return config.path
        del lines[line - 1]
    else:
        written = f"{key} = {toml_value(new)}"
        if line is not None:
            lines[line - 1] = written
        else:
            first_table = next((i for i, each in enumerate(lines) if each.lstrip().startswith("[")), len(lines))
            lines.insert(first_table, written)
    folder = os.path.dirname(config.path) or "."
    os.makedirs(folder, exist_ok=True)
    temporary = f"{config.path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + ("\n" if lines else ""))
    os.replace(temporary, config.path)
    return config.path
