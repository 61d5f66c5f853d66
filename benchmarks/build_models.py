"""Full-size random-weight models with the real published vocabularies, built once into a cache folder.

Random weights cost the same to run as trained ones: the same shapes, the same vocabulary, the same compute. The
vocabularies come from `../shared/tokenizers` (not part of this project: see that folder's README).
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TOKENIZERS = REPO.parent / "shared" / "tokenizers"
DEFAULT_CACHE = REPO / "benchmarks" / ".models"


def build_gpt2(tokenizers: Path, cache: Path) -> Path:
    """GPT-2 small (124M parameters, `GPT2Config()`) with the real GPT-2 BPE vocabulary."""
    target = cache / "gpt2-small-random"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(_vocabulary(tokenizers, "gpt2")))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer)))
    _save(model, tokenizer, target)
    return target


def build_bert(tokenizers: Path, cache: Path) -> Path:
    """BERT-base (110M parameters, `BertConfig()`) with the real bert-base-uncased WordPiece vocabulary."""
    target = cache / "bert-base-random"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(_vocabulary(tokenizers, "bert-base-uncased")))
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer)))
    _save(model, tokenizer, target)
    return target


def build_llama(tokenizers: Path, cache: Path) -> Path:
    """A Llama of GPT-2-small's size (12 layers, 768 wide) with the GPT-2 vocabulary: a causal LM that gbcli decodes
    through its generic path (the model's own forward and KV cache), not the written-out GPT-2 step."""
    target = cache / "llama-gpt2-size-random"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(_vocabulary(tokenizers, "gpt2")))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    _save(LlamaForCausalLM(config), tokenizer, target)
    return target


def _vocabulary(tokenizers: Path, name: str) -> Path:
    folder = tokenizers / name
    if not folder.is_dir():
        raise SystemExit(
            f"error: the {name} vocabulary is not at {folder}.\n"
            "hint: pass --tokenizers DIR, the folder that holds gpt2/ and bert-base-uncased/."
        )
    return folder


def _save(model, tokenizer, target: Path) -> None:
    # Built next to the target and renamed into place, so an interrupted build never looks finished.
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    model.eval()
    model.save_pretrained(building)
    tokenizer.save_pretrained(building)
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
