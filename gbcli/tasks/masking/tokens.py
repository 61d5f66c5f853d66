"""What a tokenizer says about single token ids: its raw piece, its text, and whether it can be written at all.

The per-model answers that every text asks again (the special ids, the decoded text of a token, whether tokens
carry their leading space) are cached in `LoadedModel.extras`, so they are worked out once per loaded model.
"""

from __future__ import annotations

from gbcli.loading.models import LoadedModel


def special_ids(lm: LoadedModel) -> set[int]:
    cached = lm.extras.get("fill_mask_special_ids")
    if cached is None:
        cached = lm.extras["fill_mask_special_ids"] = set(lm.tokenizer.all_special_ids)
    return cached


def piece(lm: LoadedModel, token_id: int) -> str:
    """The raw vocabulary entry (`Ġduck`, `##p`), or <id N> for an id the tokenizer has no entry for."""
    raw = lm.tokenizer.convert_ids_to_tokens(token_id)
    return raw if raw is not None else f"<id {token_id}>"


def undecodable(lm: LoadedModel, token_id: int) -> bool:
    """An id the model can predict but its tokenizer has no entry for: a row the embeddings were padded with."""
    return token_id >= len(lm.tokenizer)


def undecodable_rows(lm: LoadedModel) -> int:
    return max(0, lm.vocab_size - len(lm.tokenizer))


def token_text(lm: LoadedModel, token_id: int) -> str:
    """The token decoded on its own (GPT-2 `Ġduck` → " duck"), cached: top-k lists repeat the same tokens."""
    cache = lm.extras.setdefault("fill_mask_texts", {})
    text = cache.get(token_id)
    if text is None:
        text = cache[token_id] = lm.tokenizer.decode([token_id])
    return text


def marks_spaces(lm: LoadedModel) -> bool:
    """Whether tokens carry their leading space (byte-level BPE, SentencePiece) rather than drop it (WordPiece)."""
    cached = lm.extras.get("fill_mask_marks_spaces")
    if cached is None:
        tok = lm.tokenizer
        cached = tok.decode(tok(" a", add_special_tokens=False)["input_ids"]).startswith(" ")
        lm.extras["fill_mask_marks_spaces"] = cached
    return cached
