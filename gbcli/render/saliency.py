"""The `saliency` screen: per model, the sentence with each token shaded by its share of the attribution, a table
of the numbers (with a bar, for terminals without colour) and integrated gradients' completeness check."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.render.masking import format_prob
from gbcli.tasks.saliency import METHODS, ModelSaliency, SaliencyResult, SalientToken

BAR_WIDTH = 10
UNSEEN_STYLE = "dim strike"


def format_attribution(value: float | None) -> str:
    if value is None:
        return "·"
    if value == 0:
        return "0"
    return f"{value:+.4f}" if abs(value) >= 1e-3 else f"{value:+.1e}"


def format_amount(value: float) -> str:
    """A sum of attributions or a difference of log-probabilities, in nats."""
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def format_share(share: float | None) -> str:
    return "·" if share is None else f"{share * 100:.1f}%"


def _shown(token: SalientToken, methods: list[str]) -> tuple[float | None, float | None]:
    """The (attribution, share) that shades the sentence: integrated gradients when computed."""
    if "ig" in methods:
        return token.integrated_gradients, token.integrated_gradients_share
    return token.gradient_x_input, token.gradient_x_input_share


def shade(value: float | None, share: float | None, peak: float) -> str:
    """Red for tokens that raise f, blue for those that lower it, deeper for a larger share."""
    if value is None or share is None or peak <= 0:
        return ""
    level = share / peak
    strength = int(60 + 195 * level)
    rest = int(255 - 200 * level)
    rgb = (strength, rest, rest) if value >= 0 else (rest, rest, strength)
    return f"black on rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def shaded_sentence(saliency: ModelSaliency, methods: list[str]) -> Text:
    peak = max((_shown(t, methods)[1] or 0.0) for t in saliency.tokens)
    line = Text()
    for index, token in enumerate(saliency.tokens):
        if index:
            line.append(" ")
        if token.role == "unseen":
            line.append(token.token, style=UNSEEN_STYLE)
        elif token.role == "special":
            line.append(token.token, style="dim")
        else:
            value, share = _shown(token, methods)
            line.append(token.token, style=shade(value, share, peak))
    return line


def token_table(saliency: ModelSaliency, methods: list[str]) -> Table:
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("token", no_wrap=True)
    for method in methods:
        table.add_column("G×I" if method == "gxi" else "IG", justify="right", no_wrap=True)
        table.add_column("share", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for token in saliency.tokens:
        if token.role == "special":
            continue
        cells: list[str | Text] = [Text(token.token, style=UNSEEN_STYLE if token.role == "unseen" else "")]
        if token.role == "unseen":
            table.add_row(*cells, *["·"] * (2 * len(methods)), Text("not read", style="dim"))
            continue
        for method in methods:
            if method == "gxi":
                cells += [format_attribution(token.gradient_x_input), format_share(token.gradient_x_input_share)]
            else:
                cells += [
                    format_attribution(token.integrated_gradients),
                    format_share(token.integrated_gradients_share),
                ]
        share = _shown(token, methods)[1] or 0.0
        cells.append(Text("█" * round(share * BAR_WIDTH), style="red"))
        table.add_row(*cells)
    return table


def completeness_line(saliency: ModelSaliency) -> Text | None:
    check = saliency.completeness
    if check is None:
        return None
    line = Text(
        f"completeness ({check.steps} steps): Σ IG {format_amount(check.attribution_sum)}, f(x) − f(x') "
        f"{format_amount(check.f_input - check.f_baseline)}, error {check.error:.1e} "
        f"({check.relative_error * 100:.2f}%)",
        style="dim",
    )
    if not check.holds:
        line.append(f" over {check.tolerance:.0%}: raise --steps", style="yellow")
    return line


def model_section(saliency: ModelSaliency, methods: list[str]) -> list[RenderableType]:
    target = saliency.target
    how = "--target" if target.chosen else "top prediction"
    parts: list[RenderableType] = [
        Text.assemble(
            (f"{family_title(saliency.family)} · {saliency.model}", "bold"), (f"  predicts {saliency.predicts}", "dim")
        ),
        Text.assemble(
            "target ",
            (target.token, "bold green"),
            f" (p {format_prob(target.prob)}, {how}); ",
            *(
                ("most weight on ", (saliency.most_salient, "bold"))
                if saliency.most_salient is not None
                else ("no token of the text is read",)
            ),
        ),
        shaded_sentence(saliency, methods),
        token_table(saliency, methods),
    ]
    line = completeness_line(saliency)
    if line is not None:
        parts.append(line)
    return parts


def saliency_view(result: SaliencyResult) -> RenderableType:
    names = " and ".join(METHODS[m] for m in result.methods)
    parts: list[RenderableType] = [Text(result.text, style="bold"), Text(names, style="dim")]
    for saliency in result.models:
        parts.append(Text(""))
        parts += model_section(saliency, result.methods)
    parts += [Text(""), Text(result.note, style="dim")]
    return Group(*parts)
