"""The three families gbcli compares (GPT-style causal LMs, BERT-style masked LMs, BART-style encoder-decoders):
what each model flag expects, and how every model of a command is loaded. Plain values, read by the loader
(`models`) and by the check that comes before it (`availability`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["gpt", "bert", "bart"]
Kind = Literal["causal", "masked", "seq2seq"]
FAMILIES: tuple[Family, ...] = ("gpt", "bert", "bart")


@dataclass(frozen=True)
class FamilyInfo:
    """What a model flag expects: the kind of model, its default checkpoint and how to describe it."""

    family: Family
    flag: str
    env: str
    default: str
    kind: Kind
    kind_label: str
    examples: str
    objective: str
    attention_direction: str
    title: str  # how screens and exports name the column


FAMILY_INFO: dict[Family, FamilyInfo] = {
    "gpt": FamilyInfo(
        "gpt",
        "--gpt",
        "GBCLI_GPT",
        "gpt2",
        "causal",
        "a causal language model",
        "gpt2, distilgpt2, gpt2-medium",
        "causal language modelling (predict the next token)",
        "causal (left to right)",
        "GPT",
    ),
    "bert": FamilyInfo(
        "bert",
        "--bert",
        "GBCLI_BERT",
        "bert-base-uncased",
        "masked",
        "a masked language model",
        "bert-base-uncased, distilbert-base-uncased, roberta-base",
        "masked language modelling (predict hidden tokens)",
        "bidirectional",
        "BERT",
    ),
    "bart": FamilyInfo(
        "bart",
        "--bart",
        "GBCLI_BART",
        "facebook/bart-base",
        "seq2seq",
        "an encoder-decoder (seq2seq) model",
        "facebook/bart-base, facebook/bart-large",
        "denoising (reconstruct corrupted text)",
        "bidirectional encoder, causal decoder",
        "BART",
    ),
}


def family_title(family: str) -> str:
    """A column's title: GPT, BERT or BART (any other name as it is)."""
    info = FAMILY_INFO.get(family)  # type: ignore[call-overload]
    return info.title if info is not None else family


KIND_LABEL: dict[str, str] = {
    "causal": "a causal language model",
    "masked": "a masked language model",
    "seq2seq": "an encoder-decoder (seq2seq) model",
    "encoder": "a bare encoder without a language-model head",
}

FLAG_FOR_KIND: dict[str, str] = {"causal": "--gpt", "masked": "--bert", "seq2seq": "--bart"}


@dataclass(frozen=True)
class LoadOptions:
    """How to load every model of one command: the same for all columns."""

    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    offline: bool = False
