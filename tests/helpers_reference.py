"""Independent computations the tests compare gbcli's numbers against: plain loops over a transformers model."""

from __future__ import annotations

import torch


def naive_pll(bert, text: str, within_word: bool = False) -> list[float]:
    """BERT's pseudo-log-likelihood by the textbook loop: each token masked in a copy of its own, one forward pass
    per copy; `within_word` (PLL-word-l2r) also masks the later pieces of the token's word. Returns one log-prob
    per text token (the special tokens at either end are not scored)."""
    tokenizer, model = bert
    encoded = tokenizer(text)
    ids, words = encoded["input_ids"], encoded.word_ids()
    result = []
    for i in range(1, len(ids) - 1):
        copy = list(ids)
        copy[i] = tokenizer.mask_token_id
        if within_word:
            for j in range(i + 1, len(ids) - 1):
                if words[j] == words[i]:
                    copy[j] = tokenizer.mask_token_id
        with torch.no_grad():
            logits = model(torch.tensor([copy])).logits[0, i]
        result.append(logits.log_softmax(-1)[ids[i]].item())
    return result


def prompt_after_bos(tokenizer, text: str) -> list[int]:
    """A causal LM's prompt as every gbcli command reads it: its BOS token (else EOS; GPT-2's <|endoftext|>), then
    the text's own tokens."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ([bos] if bos is not None else []) + tokenizer(text, add_special_tokens=False)["input_ids"]
