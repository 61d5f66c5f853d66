"""The options that mean the same thing on every command, and the loading of the models they name.

The model options (--models, --with-bart, --gpt, --bert, --bart, --device, --dtype, --revision, --offline) are
written once, in `model_options`: a command decorated with it lists only its own options and receives one
`ModelChoice`, which checks and loads when the command asks, so that errors come in the order the command chooses.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gbcli.cli.reporting import print_warnings, stderr_console
from gbcli.errors import usage_error
from gbcli.loading.families import FAMILIES, FAMILY_INFO, Family, LoadOptions
from gbcli.settings import value

if TYPE_CHECKING:
    from gbcli.loading.models import LoadedModel, LoadedTokenizer
    from gbcli.loading.shapes import ModelShape

F = TypeVar("F", bound=Callable[..., Any])

GptOption = Annotated[
    str | None,
    typer.Option(
        "--gpt",
        envvar="GBCLI_GPT",
        help="Causal LM: hub id or local folder (default gpt2).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
BertOption = Annotated[
    str | None,
    typer.Option(
        "--bert",
        envvar="GBCLI_BERT",
        help="Masked LM: hub id or local folder (default bert-base-uncased).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
BartOption = Annotated[
    str | None,
    typer.Option(
        "--bart",
        envvar="GBCLI_BART",
        help="Encoder-decoder (seq2seq) denoiser: hub id or local folder "
        "(default facebook/bart-base). Shown with --with-bart or --models ...,bart.",
        show_default=False,
        rich_help_panel="Models",
    ),
]
WithBartOption = Annotated[
    bool,
    typer.Option("--with-bart", help="Add BART's column to the ones --models chooses.", rich_help_panel="Models"),
]
ModelsOption = Annotated[
    str,
    typer.Option("--models", help="Which columns to show, comma-separated: gpt, bert, bart.", rich_help_panel="Models"),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        envvar="GBCLI_DEVICE",
        help="auto (cuda, then mps, then cpu), cpu, cuda or mps (default: the settings file's, else auto).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        envvar="GBCLI_DTYPE",
        help="auto, float32, bfloat16 or float16 (default: the settings file's, else auto).",
        show_default=False,
        rich_help_panel="Models",
    ),
]
RevisionOption = Annotated[
    str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).", rich_help_panel="Models")
]
OfflineOption = Annotated[
    bool,
    typer.Option("--offline", help="Never touch the network (also HF_HUB_OFFLINE=1).", rich_help_panel="Models"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
# A file command's output (`score`, `pairs`, `fill-mask` with --file).
OutputOption = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="--file: write each line's record (as --json prints it) to this "
        "file, JSON Lines in input order; also under torchrun.",
        show_default=False,
    ),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue an interrupted --output file: its finished lines are kept, not done again."
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Let --output replace an existing file.")]


def choose_columns(models: str, with_bart: bool, allowed: tuple[Family, ...] = FAMILIES) -> list[Family]:
    """The model columns of a command: --models in the order given, and BART after them with --with-bart."""
    families = parse_models(models, allowed)
    if with_bart and "bart" not in families:
        families.append("bart")
    return families


def parse_models(models: str, allowed: tuple[Family, ...] = FAMILIES) -> list[Family]:
    """`gpt,bert` → ["gpt", "bert"], in the order given, each once."""
    chosen: list[Family] = []
    for raw in models.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in allowed:
            raise usage_error(f"Unknown model column '{name}' in --models.", f"Choose from: {', '.join(allowed)}.")
        if name not in chosen:
            chosen.append(name)  # type: ignore[arg-type]
    if not chosen:
        raise usage_error("--models names no model.", f"Choose from: {', '.join(allowed)}.")
    return chosen


def load_options(device: str, dtype: str, revision: str | None, offline: bool) -> LoadOptions:
    if device not in {"auto", "cpu", "cuda", "mps"} and not device.startswith("cuda:"):
        raise usage_error(f"Unknown device '{device}'.", "Use one of: auto, cpu, cuda, mps.")
    if dtype not in {"auto", "float32", "bfloat16", "float16"}:
        raise usage_error(f"Unknown dtype '{dtype}'.", "Use one of: auto, float32, bfloat16, float16.")
    return LoadOptions(device=device, dtype=dtype, revision=revision, offline=offline)


def requested_columns(
    families: list[Family], specs: dict[Family, str | None], options: LoadOptions
) -> list[tuple[Family, str]]:
    """(family, spec) of each chosen column, after checking that every one of them can be had (one error for all)."""
    from gbcli.loading.models import check_available, resolve_spec

    requested = [(family, resolve_spec(family, specs.get(family))) for family in families]
    check_available(requested, options)
    if options.revision is not None:
        folders = [spec for _, spec in requested if os.path.isdir(spec)]
        if folders:  # a folder has no revisions: say so rather than ignore the option silently
            what = "folder" if len(folders) == 1 else "folders"
            print_warnings(
                [
                    f"--revision {options.revision} does not apply to the local {what} "
                    f"{', '.join(folders)}; a folder is read as it is."
                ]
            )
    return requested


IMPORTING = "Importing torch and transformers (once per process) …"


def load_column(family: Family, spec: str, options: LoadOptions, *, need_head: bool = True) -> LoadedModel:
    """Load one model (once per process), with a status line on stderr while it loads."""
    from gbcli.loading.models import import_libraries, is_loaded, libraries_imported, load_model
    from gbcli.render.common import animated

    console = stderr_console()
    message = f"Loading {FAMILY_INFO[family].flag[2:].upper()} model {spec} …"
    if not animated(console):  # not a terminal, or NO_COLOR: no spinner, whose redraws are escape codes
        if console.is_terminal and not is_loaded(family, spec, options, need_head=need_head):
            # NO_COLOR on a terminal: the spinner's two steps as plain lines (gbcli.terminal's policy).
            if not libraries_imported():
                console.print(IMPORTING, markup=False, highlight=False)
                import_libraries()
            console.print(message, markup=False, highlight=False)
        return load_model(family, spec, options, need_head=need_head)
    with console.status(IMPORTING if not libraries_imported() else message, spinner="dots") as status:
        # The first model of a process waits mostly for the imports: the spinner says so, then names the model.
        import_libraries()
        status.update(message)
        return load_model(family, spec, options, need_head=need_head)


def load_columns(
    families: list[Family], specs: dict[Family, str | None], options: LoadOptions, *, need_head: bool = True
) -> list[LoadedModel]:
    """Load each chosen model once, after checking that all of them can be had."""
    requested = requested_columns(families, specs, options)
    return [load_column(family, spec, options, need_head=need_head) for family, spec in requested]


@dataclass(frozen=True)
class ModelChoice:
    """A command's model options as typed; each is checked when the command asks for it."""

    specs: dict[Family, str | None]  # --gpt, --bert, --bart
    device: str
    dtype: str
    models: str = "gpt,bert"
    with_bart: bool = False
    revision: str | None = None
    offline: bool = False

    def families(self) -> list[Family]:
        """The columns --models and --with-bart choose (a usage error for an unknown one)."""
        return choose_columns(self.models, self.with_bart)

    def load_options(self) -> LoadOptions:
        """--device, --dtype, --revision and --offline, checked."""
        return load_options(self.device, self.dtype, self.revision, self.offline)

    def load(
        self, families: list[Family], options: LoadOptions | None = None, *, need_head: bool = True
    ) -> list[LoadedModel]:
        """The chosen models, loaded once each (with these load options, else the typed ones)."""
        return load_columns(families, self.specs, options or self.load_options(), need_head=need_head)

    def shapes(self, families: list[Family]) -> list[ModelShape]:
        """The layers and heads of each chosen model that its config.json tells, read before anything loads (a
        model whose config cannot be read here is left out: its load says what is wrong)."""
        from gbcli.loading.models import resolve_spec
        from gbcli.loading.shapes import read_shape

        found = [read_shape(family, resolve_spec(family, self.specs.get(family)), self.revision) for family in families]
        return [shape for shape in found if shape is not None]

    def load_tokenizers(self, families: list[Family]) -> list[LoadedTokenizer]:
        """The chosen models' tokenizers alone, each once per process."""
        from gbcli.loading.models import load_tokenizer

        options = self.load_options()
        return [
            load_tokenizer(family, spec, options) for family, spec in requested_columns(families, self.specs, options)
        ]


def _model_parameters(columns: bool) -> list[inspect.Parameter]:
    """The model options as the parameters Typer reads, in the order every command's --help lists them."""

    def option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)

    chosen = [option("models", ModelsOption, "gpt,bert"), option("with_bart", WithBartOption, False)] if columns else []
    loaded = [
        option("gpt", GptOption, None),
        option("bert", BertOption, None),
        option("bart", BartOption, None),
        option("device", DeviceOption, None),
        option("dtype", DtypeOption, None),
    ]
    hub = [option("revision", RevisionOption, None), option("offline", OfflineOption, False)] if columns else []
    return chosen + loaded + hub


def model_options(command: F | None = None, *, columns: bool = True) -> Any:
    """Give `command` the model options (before its --json, after its own) and call it with `choice=ModelChoice`.

    `columns=False` (shell, serve: commands that keep models loaded, and whose own --models says which to load
    first) adds only --gpt, --bert, --bart, --device and --dtype. Typer reads a command's options from its
    signature, so the decorated function shows Typer a signature with the shared options in place of `choice`.
    """
    if command is None:
        return functools.partial(model_options, columns=columns)
    own = [
        parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for parameter in inspect.signature(command, eval_str=True).parameters.values()
        if parameter.name != "choice"
    ]
    at = next((i for i, parameter in enumerate(own) if parameter.name == "json_output"), len(own))
    parameters = own[:at] + _model_parameters(columns) + own[at:]

    @functools.wraps(command)
    def with_choice(**typed: Any) -> Any:
        # An option left out takes GBCLI_DEVICE/GBCLI_DTYPE (Typer reads them), else the settings file, else auto.
        choice = ModelChoice(
            {family: typed.pop(family) for family in FAMILIES},
            value("device", typed.pop("device")),
            value("dtype", typed.pop("dtype")),
        )
        if columns:
            choice = replace(
                choice,
                models=typed.pop("models"),
                with_bart=typed.pop("with_bart"),
                revision=typed.pop("revision"),
                offline=typed.pop("offline"),
            )
        return command(choice=choice, **typed)

    with_choice.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    with_choice.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return with_choice
