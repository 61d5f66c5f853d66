"""`gbcli config`: show and change the settings a user keeps (gbcli.settings), as `git config` does."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from gbcli.cli.options import JsonOption
from gbcli.cli.reporting import handle_errors, print_warnings, show
from gbcli.errors import usage_error
from gbcli.settings import SETTINGS, config_path, key_line, read_config, resolve, write_setting

HELP = """Show and change the settings gbcli keeps in a TOML file (`gbcli config path` says where).

Each setting is taken, first to last, from: the command's option; its environment variable; the settings file;
the built-in default.

\b
key         variable          default             meaning
gpt         GBCLI_GPT         gpt2                the causal model (--gpt)
bert        GBCLI_BERT        bert-base-uncased   the masked model (--bert)
bart        GBCLI_BART        facebook/bart-base  the seq2seq model (--bart)
device      GBCLI_DEVICE      auto                --device: auto, cpu, cuda, cuda:N, mps
dtype       GBCLI_DTYPE       auto                --dtype: auto, float32, bfloat16, float16
auto-serve  GBCLI_AUTO_SERVE  true                on a terminal, keep models warm in a server started by itself
                                                  (--no-server or GBCLI_NO_SERVER=1: no server at all)
keep-alive  GBCLI_KEEP_ALIVE  10m                 how long a server keeps an unused model (--keep-alive)

\b
gbcli config                       every setting, its value and where it comes from
gbcli config get KEY               one value
gbcli config set KEY VALUE         write it to the file (gbcli config set auto-serve off)
gbcli config unset KEY             remove it from the file
gbcli config path                  the file: $GBCLI_CONFIG, else $XDG_CONFIG_HOME/gbcli/config.toml,
                                   else ~/.config/gbcli/config.toml
"""

config_app = typer.Typer(
    help=HELP, add_completion=False, rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]}
)


@dataclass
class SettingValue:
    """One setting as it stands for a command run now: its value and where that value comes from."""

    key: str
    value: Any
    source: str  # environment, file or default
    variable: str


@dataclass
class SettingsReport:
    """Every setting (`gbcli config`), with the file they are read from."""

    path: str
    settings: list[SettingValue]


def current(key: str) -> SettingValue:
    value, source = resolve(key)
    variable = SETTINGS[key].variable
    if key == "auto-serve" and source == "environment" and not os.environ.get(variable, "").strip():
        variable = "GBCLI_NO_SERVER"  # no server at all, so none started by itself either
    return SettingValue(key, value, source, variable)


def setting_named(key: str) -> Any:
    setting = SETTINGS.get(key)
    if setting is None:
        raise usage_error(f"There is no setting '{key}'.", f"The settings: {', '.join(SETTINGS)}.")
    return setting


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_view(report: SettingsReport) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for title in ("key", "value", "from"):
        table.add_column(title, overflow="fold")
    for entry in report.settings:
        source = entry.variable if entry.source == "environment" else entry.source
        table.add_row(entry.key, shown(entry.value), source)
    return Group(Text(f"settings file: {report.path}"), table)


@config_app.callback(invoke_without_command=True)
@handle_errors
def show_settings(context: typer.Context, json_output: JsonOption = False) -> None:
    """Every setting, its value and where it comes from (environment, file or default)."""
    if context.invoked_subcommand is not None:
        return

    config = read_config()
    print_warnings(config.warnings)
    report = SettingsReport(config.path, [current(key) for key in SETTINGS])
    show(report, json_output, settings_view)


@config_app.command("get")
@handle_errors
def get_setting(
    key: Annotated[
        str,
        typer.Argument(help="The setting: gpt, bert, bart, device, dtype, auto-serve, keep-alive.", show_default=False),
    ],
    json_output: JsonOption = False,
) -> None:
    """Print one setting's value (from the environment, the file or the default)."""
    from gbcli.render.common import dumps

    setting_named(key)
    entry = current(key)
    print(dumps(entry) if json_output else shown(entry.value))


@config_app.command("set")
@handle_errors
def set_setting(
    key: Annotated[str, typer.Argument(help="The setting.", show_default=False)],
    value: Annotated[str, typer.Argument(help="Its value: a model, a device, on/off, 30m...", show_default=False)],
) -> None:
    """Write KEY = VALUE into the settings file (the rest of the file is kept)."""
    setting = setting_named(key)
    try:
        parsed = setting.from_text(value)
    except ValueError as exc:
        raise usage_error(f"'{key}' {exc}; '{value}' is not.", f"gbcli config --help: {setting.meaning}.") from None
    path = write_setting(key, parsed)
    note = _overridden(setting)
    print_warnings([note] if note else [])
    typer.echo(f"{key} = {shown(parsed)} in {path}", err=True)


@config_app.command("unset")
@handle_errors
def unset_setting(key: Annotated[str, typer.Argument(help="The setting.", show_default=False)]) -> None:
    """Remove KEY from the settings file: its environment variable or built-in default applies again."""
    if key not in SETTINGS:  # an unknown key may be removed too: it is what the warning about it suggests
        config = read_config()
        if key_line(config.text, key) is None:
            raise usage_error(f"There is no setting '{key}'.", f"The settings: {', '.join(SETTINGS)}.")
    path = write_setting(key, None)
    typer.echo(f"{key} removed from {path}", err=True)


@config_app.command("path")
@handle_errors
def config_path_command() -> None:
    """Print where the settings file is (it need not exist yet)."""
    print(config_path())


def _overridden(setting: Any) -> str | None:
    if os.environ.get(setting.variable, "").strip():
        return f"{setting.variable} is set, and wins over the file while it is."
    if setting.key == "auto-serve" and os.environ.get("GBCLI_NO_SERVER", "").strip():
        return "GBCLI_NO_SERVER is set, and wins over the file while it is."
    return None
