"""Tokenization: how each model cuts the same text into pieces, aligned by the characters they cover.

GPT-2 uses byte-level BPE (a leading space belongs to the next piece, `Ġduck`, and no character is ever
unknown); BERT uses WordPiece (spaces are dropped, later pieces of a word carry `##`, characters outside the
vocabulary become `[UNK]`, and `[CLS]`/`[SEP]` are added). Offsets into the original text are the common ground
that lets both be shown row by row.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

from gbcli.errors import usage_error
from gbcli.loading.families import family_title
from gbcli.loading.models import LoadedModel
from gbcli.terminal import visible_text

SPACE_MARK = "␣"  # GPT-2's leading-space marker Ġ, shown as the space it stands for
CONTINUATION_MARK = "·"  # WordPiece's ##: this piece joins the one before it
NEWLINE_MARK = "↵"


def readable_piece(piece: str, text: str | None = None) -> str:
    """A tokenizer piece as a reader sees it: `Ġduck` → `␣duck`, `##ing` → `·ing`, `Ċ` → `↵`.

    `piece` is the raw vocabulary entry; `text` is what the tokenizer decodes it to, when known.
    """
    if piece.startswith("##") and len(piece) > 2:
        return CONTINUATION_MARK + piece[2:]
    shown = text if text is not None else piece.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
    if shown == "" and piece:
        shown = piece
    shown = shown.replace("\n", NEWLINE_MARK).replace("\t", "⇥")
    if shown.startswith(" "):
        shown = SPACE_MARK + shown[1:]
    # Control characters would move the cursor, bidirectional ones reverse the line: their escapes instead, as in
    # every view (gbcli.terminal.visible_text).
    return visible_text(shown, kept="")


@dataclass
class Piece:
    """One token as the model receives it, with the characters of the text it stands for."""

    position: int  # index in the model's input ids
    id: int
    piece: str  # the raw vocabulary entry, e.g. "Ġduck" or "##p"
    shown: str  # the same, readable: "␣duck", "·p"
    start: int  # character offsets into the text; start == end for tokens the tokenizer added
    end: int
    text: str  # text[start:end]
    special: bool  # [CLS], [SEP], <|endoftext|>, [MASK] ...
    added: bool  # special token added by the tokenizer, not written in the text
    unknown: bool  # the tokenizer had no piece for these characters ([UNK])
    word: int | None = None  # the tokenizer's own word (pre-tokenizer unit) this piece belongs to; None: special


@dataclass
class ModelTokens:
    """One model's tokenization of the text."""

    family: str
    model: str
    algorithm: str  # byte-level BPE, WordPiece, SentencePiece (Unigram) ...
    vocab_size: int
    pieces: list[Piece]
    text_tokens: int  # pieces that come from the text
    added_tokens: int  # special tokens the tokenizer added around it
    unknown_tokens: int

    @property
    def ids(self) -> list[int]:
        return [p.id for p in self.pieces]


@dataclass
class AlignedSpan:
    """The smallest stretch of text that no piece of any model crosses: its pieces cover the same characters.

    A span with start == end holds the special tokens a tokenizer added before or after the text.
    """

    start: int
    end: int
    text: str
    pieces: dict[str, list[int]] = field(default_factory=dict)  # family → positions in that model's pieces


@dataclass
class TokenizationResult:
    text: str
    columns: list[ModelTokens]
    spans: list[AlignedSpan]


def algorithm_name(tokenizer) -> str:
    """Name the subword algorithm from the fast tokenizer's model and pre-tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return type(tokenizer).__name__
    model = type(backend.model).__name__
    pre = repr(backend.pre_tokenizer) if backend.pre_tokenizer is not None else ""
    if model == "BPE":
        return "byte-level BPE" if "ByteLevel" in pre else "BPE"
    if model == "Unigram":
        return "SentencePiece (Unigram)"
    return model


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    """Invert byte-level BPE's byte → printable-character table (the one that turns a space into Ġ)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table: dict[str, int] = {chr(b): b for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in printable:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


def shown_piece(tokenizer, piece: str, byte_level: bool) -> str:
    """A piece for people. A byte-level piece holding part of a UTF-8 character shows its bytes (`\\xe6`)."""
    if piece in tokenizer.all_special_tokens or piece.startswith("##"):
        return readable_piece(piece, piece if not piece.startswith("##") else None)
    if byte_level:
        table = _unicode_to_byte()
        if all(ch in table for ch in piece):
            raw = bytes(table[ch] for ch in piece)
            return readable_piece(piece, raw.decode("utf-8", errors="backslashreplace"))
    return readable_piece(piece, tokenizer.convert_tokens_to_string([piece]))


def check_text(text: str) -> str:
    if not text.strip():
        raise usage_error("The text is empty.", "Give some text, or - to read stdin.")
    return text


def tokenize_text(lm: LoadedModel, text: str) -> ModelTokens:
    """Tokenize as the model's own calls do (with its special tokens), keeping each piece's character offsets."""
    tok = lm.tokenizer
    if not getattr(tok, "is_fast", True):
        raise usage_error(
            f"The tokenizer of {lm.name} gives no character offsets.", "Use a model with a fast tokenizer."
        )
    encoded = tok(text, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    offsets = encoded["offset_mapping"]
    pieces_raw = tok.convert_ids_to_tokens(ids)
    words = encoded.word_ids()
    special_ids = set(tok.all_special_ids)
    unk_id, unk_token = tok.unk_token_id, tok.unk_token
    algorithm = algorithm_name(tok)
    byte_level = algorithm == "byte-level BPE"
    pieces = []
    for position, (token_id, raw, (start, end), word) in enumerate(zip(ids, pieces_raw, offsets, words, strict=True)):
        covered = text[start:end]
        # A tokenizer whose unknown token doubles as BOS/EOS (GPT-2) only reports an unknown when the characters
        # it stands for are not that token written literally.
        unknown = unk_id is not None and token_id == unk_id and start < end and covered.strip() != unk_token
        special = token_id in special_ids and not unknown
        added = special and start == end
        pieces.append(
            Piece(
                position=position,
                id=token_id,
                piece=raw,
                shown=shown_piece(tok, raw, byte_level),
                start=start,
                end=end,
                text=covered,
                special=special,
                added=added,
                unknown=unknown,
                word=None if added else word,
            )
        )
    added_count = sum(p.added for p in pieces)
    return ModelTokens(
        family=lm.family,
        model=lm.name,
        algorithm=algorithm,
        vocab_size=len(tok),
        pieces=pieces,
        text_tokens=len(pieces) - added_count,
        added_tokens=added_count,
        unknown_tokens=sum(p.unknown for p in pieces),
    )


def align(text: str, columns: list[ModelTokens]) -> list[AlignedSpan]:
    """Cut the text wherever no piece of any model straddles the cut, and list each model's pieces per stretch."""
    covering = [p for column in columns for p in column.pieces if not p.added and p.start < p.end]
    bounds = sorted({0, len(text)} | {p.start for p in covering} | {p.end for p in covering})
    cuts = [b for b in bounds if not any(p.start < b < p.end for p in covering)]
    spans = [AlignedSpan(a, b, text[a:b]) for a, b in itertools.pairwise(cuts)]
    before = AlignedSpan(0, 0, "")
    after = AlignedSpan(len(text), len(text), "")
    for column in columns:
        seen_text = False
        for index, piece in enumerate(column.pieces):
            if piece.added or piece.start == piece.end:
                # Added specials sit before or after the text; an empty piece inside the text joins its span.
                if piece.added or not spans:
                    target = after if seen_text else before
                else:
                    target = next((s for s in spans if s.start <= piece.start < s.end), spans[-1])
            else:
                seen_text = True
                target = next(s for s in spans if s.start <= piece.start < s.end)
            target.pieces.setdefault(column.family, []).append(index)
    # Stretches no model has a piece for are shown only when they hold visible characters a tokenizer dropped.
    kept = [s for s in spans if s.pieces or s.text.strip()]
    return [s for s in [before] if s.pieces] + kept + [s for s in [after] if s.pieces]


def tokenize(models: list[LoadedModel], text: str) -> TokenizationResult:
    """Tokenize the text with each model's tokenizer and align the pieces by character offsets."""
    text = check_text(text)
    columns = [tokenize_text(lm, text) for lm in models]
    return TokenizationResult(text=text, columns=columns, spans=align(text, columns))


def unknown_text_warning(lm: LoadedModel, texts: list[str]) -> str | None:
    """The warning every command gives when a model reads its unknown token ([UNK]) for characters of the input
    (score words it per text: gbcli.tasks.scoring.unknown_token_warnings); None when it has a token for all."""
    unk_id = lm.tokenizer.unk_token_id
    if unk_id is None or not texts:
        return None
    # One batched call screens every text (probe and finetune pass whole data files); only the few that hold the
    # unknown id are tokenized again with offsets, to name their characters.
    suspects = [text for text, ids in zip(texts, lm.tokenizer(texts)["input_ids"], strict=True) if unk_id in ids]
    missing = list(
        dict.fromkeys(
            piece.text.strip() or piece.text
            for text in suspects
            for piece in tokenize_text(lm, text).pieces
            if piece.unknown
        )
    )
    if not missing:
        return None
    shown = ", ".join(repr(text) for text in missing[:5]) + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    )
    where = "the texts" if len(texts) > 1 else "the text"
    return (
        f"{family_title(lm.family)} ({lm.name}) has no token for {shown} in {where} and reads its unknown token "
        f"({lm.tokenizer.unk_token}) in their place: what it says there is about {lm.tokenizer.unk_token}, not "
        "about what the text says."
    )
