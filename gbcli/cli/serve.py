"""The commands that keep models loaded: `gbcli shell` (in this process) and `gbcli serve` (a local server that
every other command then uses), with `ps` and `stop` for the server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from gbcli import settings
from gbcli.cli.options import JsonOption, ModelChoice, load_columns, load_options, model_options, parse_models
from gbcli.cli.reporting import handle_errors, print_warnings
from gbcli.errors import GbcliError, usage_error
from gbcli.loading.families import FAMILIES, FAMILY_INFO

if TYPE_CHECKING:
    from gbcli.warm.runner import Host


@handle_errors
@model_options(columns=False)
def shell(
    ctx: typer.Context,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Models to load at start, comma-separated: gpt, bert, bart "
            "(default gpt,bert); also every command's default.",
            show_default=False,
            rich_help_panel="Models",
        ),
    ] = None,
    *,
    choice: ModelChoice,
    json_output: Annotated[
        bool, typer.Option("--json", help="Every command prints JSON: one document per command, one per line.")
    ] = False,
) -> None:
    """Load the models once, then type commands without `gbcli` (help, models, set, load, exit): answers at once.

    A line of text alone runs fill-mask on it when it holds a mask, compare otherwise; a line whose first word is a
    command's name mistyped (`atention the duck`) is refused with a guess. Off a terminal
    (`gbcli shell < commands.txt`) it reads the commands from stdin, without prompt or colour.
    """
    from gbcli.warm.runner import host
    from gbcli.warm.shell import Session, run_shell

    host(hosted_by(ctx))
    choice.load_options()  # refuse a bad --device or --dtype before anything loads
    session = Session(json_lines=json_output)
    for name, value in (("models", models), ("device", choice.device), ("dtype", choice.dtype)):
        if value is not None and value != "auto":
            session.defaults[name] = value
    families = parse_models(models or "gpt,bert")
    code = run_shell(session, families, choice.specs)
    raise typer.Exit(code)


@handle_errors
@model_options(columns=False)
def serve(
    ctx: typer.Context,
    keep_alive: Annotated[
        str | None,
        typer.Option(
            "--keep-alive",
            envvar="GBCLI_KEEP_ALIVE",
            help="Unload a model after this long "
            "unused: 30m, 90s, 2h, or never (default: the settings file's, else 10m).",
            show_default=False,
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; its log goes to the runtime folder's server.log.")
    ] = False,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Models to load at start, comma-separated: gpt, bert, bart "
            "(default: those named by --gpt/--bert/--bart or GBCLI_*, else gpt,bert).",
            show_default=False,
            rich_help_panel="Models",
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="With --port: the address to listen on (default 127.0.0.1); any other than localhost is warned about.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="Listen on this TCP port too (0: any free one); "
            "every request must carry the token the server writes to its runtime folder.",
            show_default=False,
        ),
    ] = None,
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            hidden=True,
            help="Started by a command on a terminal "
            "(gbcli.warm.autostart): load nothing at start, exit once no model is held.",
        ),
    ] = False,
    *,
    choice: ModelChoice,
) -> None:
    """Keep models loaded in a local server: every other command then uses it by itself (--no-server: not).

    It listens on a Unix socket only this user can open, in $XDG_RUNTIME_DIR/gbcli (else /tmp/gbcli-UID), and
    on TCP only with --port (clients: GBCLI_SERVER=tcp://HOST:PORT, and GBCLI_SERVER_TOKEN off this machine).
    Other models load on the first request that names them. `gbcli ps` lists what it holds; `gbcli stop` ends it.
    """
    from gbcli.warm.runner import parse_duration

    keep_alive = str(settings.value("keep-alive", keep_alive))
    seconds = parse_duration(keep_alive)
    tcp = tcp_address(host, port)
    options = choice.load_options()
    specs = choice.specs
    named = [family for family in FAMILIES if specs[family]]
    families = parse_models(models) if models else named or ["gpt", "bert"]
    if detach:
        from gbcli.warm.manage import start_detached

        argv = [
            "serve",
            "--keep-alive",
            keep_alive,
            "--models",
            ",".join(families),
            "--device",
            choice.device,
            "--dtype",
            choice.dtype,
        ]
        if tcp is not None:
            argv += ["--host", tcp[0], "--port", str(tcp[1])]
        for family in FAMILIES:
            if specs[family]:
                argv += [FAMILY_INFO[family].flag, str(specs[family])]
        raise typer.Exit(start_detached(argv))
    from gbcli.warm.autostart import forget_failure
    from gbcli.warm.runner import host
    from gbcli.warm.server import run_server

    forget_failure()
    host(hosted_by(ctx))

    def preload() -> None:
        for family in [] if auto else families:  # an automatic server loads what its first request names
            try:
                load_columns([family], specs, options)
            except GbcliError as error:  # the others still load; this one reports again when a request names it
                print_warnings([error.message])

    raise typer.Exit(run_server(seconds, preload, tcp, auto=auto))


def hosted_by(ctx: typer.Context) -> Host:
    """What the shell or the server takes from this CLI: the command tree this command runs in, and its way of
    checking and loading models."""
    from gbcli.warm.runner import Host

    def load_models(families: list[str], specs: dict[str, str | None], device: str, dtype: str) -> object:
        return load_columns(families, specs, load_options(device, dtype, None, False))  # type: ignore[arg-type]

    return Host(ctx.find_root().command, parse_models, load_models)


def tcp_address(host: str | None, port: int | None) -> tuple[str, int] | None:
    """The (host, port) of --host/--port: None without --port (no TCP unless asked), 127.0.0.1 by default."""
    if port is None:
        if host is not None:
            raise usage_error(
                "--host needs --port: gbcli serve listens on TCP only when given a port.",
                "For example --host 127.0.0.1 --port 8765 (--port 0: any free port).",
            )
        return None
    return (host or "127.0.0.1").strip("[]"), port


@handle_errors
def ps(json_output: JsonOption = False) -> None:
    """The running server: its process, and the models it holds with their memory and idle time."""
    from gbcli.warm.manage import show_status

    raise typer.Exit(show_status(json_output))


@handle_errors
def stop() -> None:
    """Stop the running server (it finishes the request it is running first)."""
    from gbcli.warm.autostart import forget_failure
    from gbcli.warm.manage import stop_server

    forget_failure()  # a server that failed to start by itself may be tried again
    raise typer.Exit(stop_server())
