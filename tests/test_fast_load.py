"""gbcli.loading.fast_load gives exactly the model `from_pretrained` gives, or steps aside.

For every architecture of the conformance matrix (tests/fixtures/random_models.py) and every trained fixture: the
fast path either returns None (gbcli then calls from_pretrained) or a model with the same parameter and buffer
names, dtypes, requires_grad, tied tensors, config, generation config and eval mode, whose logits are bit for bit
from_pretrained's. Checkpoints it must not take (a tensor missing, left over, of another shape, a sharded or
legacy-named one) fall back, so that from_pretrained's report and gbcli's errors on it are unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

from gbcli.loading.checkpoint_checks import classify_config
from gbcli.loading.fast_load import FAST_LOAD, FAST_MODEL_TYPES, LEGACY_KEY_PARTS, fast_load
from tests.fixtures.random_models import ALL, build

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.compat]

LOADERS = {
    "causal": AutoModelForCausalLM,
    "masked": AutoModelForMaskedLM,
    "seq2seq": AutoModelForSeq2SeqLM,
    "encoder": AutoModel,
}
TRAINED = ("gpt", "bert", "bart", "bert_no_head", "mismatched_tokenizer")


def _loader(folder: Path):
    config = AutoConfig.from_pretrained(folder)
    return LOADERS[classify_config(config)], config


def _outputs(model) -> torch.Tensor:
    ids = torch.arange(1, 9).unsqueeze(0) % model.config.vocab_size
    extra = {"decoder_input_ids": ids[:, :4]} if model.config.is_encoder_decoder else {}
    out = model(input_ids=ids, **extra)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _ties(model) -> set[tuple[str, str]]:
    """Pairs of parameter names that share one tensor."""
    first: dict[int, str] = {}
    pairs = set()
    for name, tensor in model.named_parameters(remove_duplicate=False):
        owner = first.setdefault(tensor.data_ptr(), name)
        if owner != name:
            pairs.add((owner, name))
    return pairs


def assert_same_as_from_pretrained(folder: Path, dtype: torch.dtype = torch.float32) -> bool:
    """Whether the fast path took `folder`; when it did, that its model is from_pretrained's in every respect."""
    loader, config = _loader(folder)
    fast = fast_load(loader, folder, config, dtype)
    if fast is None:
        return False
    reference = loader.from_pretrained(folder, config=config, dtype=dtype)
    assert type(fast) is type(reference)
    assert fast.training is False and reference.training is False
    described = [(n, t.dtype, t.shape, t.requires_grad) for n, t in fast.named_parameters(remove_duplicate=False)]
    assert described == [
        (n, t.dtype, t.shape, t.requires_grad) for n, t in reference.named_parameters(remove_duplicate=False)
    ]
    buffers, reference_buffers = dict(fast.named_buffers()), dict(reference.named_buffers())
    assert list(buffers) == list(reference_buffers)
    for name, buffer in buffers.items():
        assert buffer.dtype == reference_buffers[name].dtype and torch.equal(buffer, reference_buffers[name]), name
    for (name, tensor), (_, expected) in zip(fast.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(tensor, expected), name
    assert _ties(fast) == _ties(reference)
    assert fast.config.to_dict() == reference.config.to_dict()
    assert getattr(fast, "generation_config", None) == getattr(reference, "generation_config", None)
    with torch.no_grad():
        assert torch.equal(_outputs(fast), _outputs(reference))
    return True


@pytest.fixture(scope="module")
def architecture_folder(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("fast-load")

    def get(name: str) -> Path:
        folder = root / name
        return folder if folder.is_dir() else build(name, folder, tiny_models[ALL[name].tokenizer])

    return get


@pytest.mark.parametrize("name", list(ALL))
def test_every_architecture_is_loaded_as_from_pretrained_loads_it_or_falls_back(name, architecture_folder):
    folder = architecture_folder(name)
    taken = assert_same_as_from_pretrained(folder)
    # The listed types must really take the short way (else the speed-up is silently gone), on every transformers
    # whose internals the short way finds (FAST_LOAD's probe; tests/test_versions.py: the newest is one).
    assert taken == (AutoConfig.from_pretrained(folder).model_type in FAST_MODEL_TYPES and FAST_LOAD.on)


@pytest.mark.parametrize("fixture", TRAINED)
def test_the_trained_fixtures_take_the_fast_path_identically(fixture, tiny_models):
    assert assert_same_as_from_pretrained(tiny_models[fixture]) == FAST_LOAD.on


def test_half_precision_is_cast_as_from_pretrained_casts_it(tiny_models):
    assert assert_same_as_from_pretrained(tiny_models["gpt"], torch.bfloat16) == FAST_LOAD.on


def _copy_with(tmp_path: Path, source: Path, edit) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(source, folder)
    tensors = load_file(source / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda t: t.pop("transformer.h.0.mlp.c_fc.weight"), id="a tensor missing"),
        pytest.param(lambda t: t.update(extra=torch.zeros(2)), id="a tensor left over"),
        pytest.param(
            lambda t: t.update({"transformer.wpe.weight": t["transformer.wpe.weight"][:-1].clone()}),
            id="a tensor of another shape",
        ),
        pytest.param(
            lambda t: t.update({"transformer.h.0.ln_1.gamma": t.pop("transformer.h.0.ln_1.weight")}),
            id="a legacy name transformers renames",
        ),
    ],
)
def test_a_checkpoint_that_is_not_exact_goes_through_from_pretrained(edit, tiny_models, tmp_path):
    folder = _copy_with(tmp_path, tiny_models["gpt"], edit)
    loader, config = _loader(folder)
    assert fast_load(loader, folder, config, torch.float32) is None


def test_a_damaged_file_goes_through_from_pretrained(tiny_models):
    loader, config = _loader(tiny_models["corrupt_weights"])
    assert fast_load(loader, tiny_models["corrupt_weights"], config, torch.float32) is None


def test_sharded_checkpoints_and_remote_code_go_through_from_pretrained(tiny_models, tmp_path):
    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_models["gpt"], sharded)
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    loader, config = _loader(sharded)
    assert fast_load(loader, sharded, config, torch.float32) is None
    loader, config = _loader(tiny_models["gpt"])
    config.auto_map = {"AutoModelForCausalLM": "modeling.Custom"}
    assert fast_load(loader, tiny_models["gpt"], config, torch.float32) is None


def test_transformers_renames_no_key_of_the_fast_types():
    """Guards an upgrade of transformers: a conversion registered for a listed type would be skipped here."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    from transformers.models.auto import modeling_auto

    classes = [
        modeling_auto.MODEL_MAPPING_NAMES,
        modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    ]
    for model_type in FAST_MODEL_TYPES:
        assert get_checkpoint_conversion_mapping(model_type) is None, model_type
        for names in classes:
            if model_type in names:
                assert get_checkpoint_conversion_mapping(names[model_type]) is None, names[model_type]
    for rename in get_checkpoint_conversion_mapping("legacy"):
        for pattern in rename.source_patterns:
            assert any(part in pattern.replace("\\", "") for part in LEGACY_KEY_PARTS), pattern


def test_a_damaged_weight_is_named_before_a_damaged_tokenizer(tiny_models, tmp_path):
    """The finite check runs beside the tokenizer's load, and its refusal still comes first."""
    from tests.cli_helpers import assert_user_error, run
    from tests.fixtures.tiny_models import GPT_PROMPT

    def poison(tensors):
        tensors["transformer.h.1.mlp.c_proj.weight"].view(-1)[5] = float("inf")

    folder = _copy_with(tmp_path, tiny_models["gpt"], poison)
    (folder / "tokenizer.json").write_text("{ not json")
    result = run("score", GPT_PROMPT, "--models", "gpt", "--gpt", str(folder), "--json")
    assert_user_error(result, 1, "hold infinite values (1 in transformer.h.1.mlp.c_proj.weight)")
