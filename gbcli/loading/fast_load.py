"""Loading a plain checkpoint at the cost of mapping it: the model built on the meta device, its tensors taken from
the memory-mapped safetensors file as they are.

`from_pretrained` does the same underneath, but first pays for machinery a plain checkpoint never uses: on the first
load of a process it compiles the key-renaming rules of every architecture transformers knows (~1,000 regular
expressions, 0.25-0.45 s on these machines) and walks each tensor through its conversion pipeline. For a local
folder with one `model.safetensors` whose tensor names, shapes and kinds are exactly those of the model its
config.json builds, none of that changes a number, and `fast_load` builds the model the short way:

- build it under transformers' own init context (meta device, the requested dtype, ties postponed);
- take each tensor from the mapped file (no copy; cast only where the dtype differs, as transformers casts);
- let transformers finish as `from_pretrained` finishes: `_finalize_model_loading` (non-persistent buffers such as
  `position_ids` made and initialised, tied weights tied), eval mode, the generation config read from the folder.

Anything else returns None and the caller uses `from_pretrained`, whose report (missing, unexpected, mismatched
keys) gbcli's checks read: a sharded or `.bin` checkpoint, a quantised or remote-code config, an architecture
outside `FAST_MODEL_TYPES`, a key that transformers would rename, a tensor missing, left over or of another shape.
So every error a broken checkpoint gets is the one it got before. tests/test_fast_load.py checks, for every
architecture of tests/test_architectures.py, that this path falls back or gives bit-identical logits, names, dtypes
and ties to `from_pretrained`, and that transformers registers no key conversion for the types listed here.

The short way uses transformers' loading internals (FAST_LOAD's probe names each one); a transformers that lacks
one of them as this module calls it (5.0, which finishes loading differently) loads every model with
`from_pretrained`, and `GBCLI_DEBUG=1` says so.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gbcli.loading.capability import FastPath, lacks_parameters, missing

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

# model_type values transformers loads without renaming or converting any key (no conversion mapping registered
# for the type or its classes), each checked bit for bit against from_pretrained by tests/test_fast_load.py.
# (gpt_neox is not: GPTNeoXForCausalLM saves its head as embed_out and renames it to lm_head on loading.)
FAST_MODEL_TYPES = frozenset(
    {
        "albert",
        "bart",
        "bert",
        "bloom",
        "deberta-v2",
        "distilbert",
        "electra",
        "falcon",
        "gemma2",
        "gpt2",
        "gpt_bigcode",
        "gpt_neo",
        "gptj",
        "llama",
        "mamba",
        "mistral",
        "modernbert",
        "opt",
        "phi",
        "qwen2",
        "roberta",
        "rwkv",
    }
)
# Parts of key names that transformers' "legacy" renames apply to whatever the architecture (LayerNorm.gamma →
# .weight, weight-norm parts, a doubled "language_model.model"): a checkpoint with one goes the long way.
LEGACY_KEY_PARTS = ("gamma", "beta", "weight_g", "weight_v", "language_model")
SAFETENSORS_FILE = "model.safetensors"
# Other weight files transformers may read in preference to or beside model.safetensors.
OTHER_WEIGHT_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json", "adapter_config.json")


def _header(path: Path) -> dict[str, Any] | None:
    """The safetensors header (tensor name → dtype, shape, offsets), or None when the file is not a sound one."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                return None
            return json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None


def eligible_file(folder: Path, config: Any) -> Path | None:
    """The one safetensors file a plain checkpoint of a known architecture loads from, else None."""
    if not folder.is_dir() or getattr(config, "model_type", None) not in FAST_MODEL_TYPES:
        return None
    if any(getattr(config, name, None) for name in ("quantization_config", "auto_map", "transformers_weights")):
        return None
    # Extra head files (transformers 5.23 on), composite models: the long way.
    if getattr(type(config), "extra_files", ()) or getattr(config, "sub_configs", None):
        return None
    if any((folder / name).exists() for name in OTHER_WEIGHT_FILES):
        return None
    path = folder / SAFETENSORS_FILE
    return path if path.is_file() else None


def _matches(model: PreTrainedModel, header: dict[str, Any]) -> bool:
    """Whether the checkpoint holds exactly the model's persistent tensors (less the tied copies), shape for shape."""
    metadata = header.get("__metadata__") or {}
    if metadata.get("format", "pt") != "pt":
        return False
    stored = {name: info for name, info in header.items() if name != "__metadata__"}
    if any(part in name for name in stored for part in LEGACY_KEY_PARTS):
        return False
    expected = model.state_dict()
    tied = set(model.all_tied_weights_keys)
    if set(stored) != set(expected) - tied:
        return False
    return all(list(expected[name].shape) == list(info["shape"]) for name, info in stored.items())


def _probe() -> str | None:
    """Why the short way cannot run on this transformers (None: it can): each internal it calls, as it calls it."""
    from transformers import AutoModel, PreTrainedModel, initialization
    from transformers.modeling_utils import LoadStateDictConfig
    from transformers.models.auto import auto_factory
    from transformers.utils import generic, loading_report

    reason = (
        missing(auto_factory, "_get_model_class")
        or missing(AutoModel, "_model_mapping")
        or missing(initialization, "no_init_weights")
        or missing(generic, "ContextManagers")
        or missing(loading_report, "LoadStateDictInfo")
        or missing(PreTrainedModel, "get_init_context", "_get_dtype_plan", "_finalize_model_loading", "set_use_kernels")
        or lacks_parameters(PreTrainedModel.get_init_context, "dtype", "is_quantized", "_is_ds_init_called")
        or lacks_parameters(LoadStateDictConfig, "pretrained_model_name_or_path", "dtype")
    )
    if reason:
        return reason

    parameters = inspect.signature(PreTrainedModel.get_init_context).parameters.values()
    unknown = {p.name for p in parameters if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD}
    if unknown - set(INIT_CONTEXT_ARGUMENTS):
        return f"get_init_context() wants {sorted(unknown - set(INIT_CONTEXT_ARGUMENTS))}, which fast load cannot give"
    fields = dataclasses.fields(loading_report.LoadStateDictInfo)
    names = {f.name for f in fields}
    unknown = {f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING} - set(REPORT_FIELDS)
    if "missing_keys" not in names or unknown:
        return f"LoadStateDictInfo's fields are not the ones fast load fills ({sorted(unknown) or 'missing_keys'})"
    return None


# What from_pretrained gives `get_init_context` for an unquantised model, by name (5.3 added allow_all_kernels, 5.25
# config): `_init_contexts` passes those this transformers' signature takes.
INIT_CONTEXT_ARGUMENTS = ("dtype", "is_quantized", "_is_ds_init_called", "allow_all_kernels", "config")
# The fields of transformers' loading report that fast load fills (an empty report, the tied keys aside).
REPORT_FIELDS = {
    "missing_keys": set,
    "unexpected_keys": set,
    "mismatched_keys": set,
    "error_msgs": list,
    "conversion_errors": dict,
    "skipped_pp_keys": set,
}
FAST_LOAD = FastPath("fast load", "from_pretrained", _probe)


def fast_load(model_class: Any, folder: Path, config: Any, dtype: torch.dtype) -> PreTrainedModel | None:
    """The model of a plain local safetensors checkpoint, loaded as `from_pretrained(folder, config=config,
    dtype=dtype)` would load it; None when the checkpoint is not plain or this transformers lacks an internal the
    short way needs (the caller then uses from_pretrained)."""
    if not FAST_LOAD.on:
        return None
    path = eligible_file(folder, config)
    header = _header(path) if path is not None else None
    if header is None:
        return None
    from transformers.initialization import no_init_weights
    from transformers.models.auto.auto_factory import _get_model_class
    from transformers.utils.generic import ContextManagers

    try:
        concrete = _get_model_class(config, model_class._model_mapping)
    except (KeyError, ValueError):  # not an architecture of this auto class: from_pretrained says so
        return None
    config = copy.deepcopy(config)
    config.name_or_path = str(folder)
    config.dtype = dtype
    # Random initialisation of meta tensors computes nothing but still runs torch's reference kernels, one call per
    # weight: switched off, as transformers switches it off under DeepSpeed (benchmarks/run.py, row `cold`).
    try:
        with ContextManagers([*_init_contexts(concrete, dtype, config), no_init_weights()]):
            model = concrete(config)
    except Exception as error:  # an __init__ that needs what an init function returns: the long way
        FAST_LOAD.say_skipped(str(folder), error)
        return None
    try:
        if model._get_dtype_plan(dtype) or not _matches(model, header):
            return None  # fp32-kept modules, or keys from_pretrained must rename or report: its report is needed
        _assign_tensors(model, path)
        _finish(model, folder)
    except Exception as error:  # a damaged file: from_pretrained's own error names it
        FAST_LOAD.say_skipped(str(folder), error)
        return None
    return model


def _init_contexts(concrete: Any, dtype: torch.dtype, config: Any) -> list[Any]:
    """transformers' own init contexts, called with the arguments this version's `get_init_context` takes, as
    from_pretrained calls it for an unquantised model."""
    given = dict(zip(INIT_CONTEXT_ARGUMENTS, (dtype, False, False, None, config), strict=True))
    parameters = inspect.signature(concrete.get_init_context).parameters
    return concrete.get_init_context(**{name: given[name] for name in parameters if name in given})


def _assign_tensors(model: PreTrainedModel, path: Path) -> None:
    """Put each memory-mapped tensor in its place, as transformers' `set_param_for_module` does."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as weights:
        for name in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
            module_path, _, attribute = name.rpartition(".")
            module = model.get_submodule(module_path) if module_path else model
            empty = getattr(module, attribute)
            value = weights.get_tensor(name)
            if value.dtype != empty.dtype:
                value = value.to(empty.dtype)
            if attribute not in module._buffers:
                value = torch.nn.Parameter(value, requires_grad=value.is_floating_point())
            value._is_hf_initialized = True  # transformers' own mark: "loaded, do not initialise"
            setattr(module, attribute, value)


def _finish(model: PreTrainedModel, folder: Path) -> None:
    """What `from_pretrained` does after the tensors are in: buffers made, ties tied, eval mode, generation config."""
    from transformers.modeling_utils import LoadStateDictConfig
    from transformers.utils.loading_report import LoadStateDictInfo

    # As from_pretrained reports it: nothing wrong, the tied copies "missing" until tie_weights ties them (the
    # report's fields differ across 5.x: skipped_pp_keys came in 5.20).
    report = {name: empty() for name, empty in REPORT_FIELDS.items()}
    report["missing_keys"] = set(model.all_tied_weights_keys)
    loading_info = LoadStateDictInfo(
        **{f.name: report[f.name] for f in dataclasses.fields(LoadStateDictInfo) if f.name in report}
    )
    load_config = LoadStateDictConfig(pretrained_model_name_or_path=str(folder), dtype=model.dtype)
    type(model)._finalize_model_loading(model, load_config, loading_info)
    if loading_info.missing_keys:  # a tie that did not happen: cannot be, but a random tensor must never pass
        raise RuntimeError(f"fast_load left {sorted(loading_info.missing_keys)[:3]} unloaded")
    model.eval()
    model.set_use_kernels(False, None)
    if model.can_generate() and hasattr(model, "adjust_generation_fn"):
        model.adjust_generation_fn(
            None,
            True,
            None,
            str(folder),
            cache_dir=None,
            force_download=False,
            proxies=None,
            local_files_only=True,
            token=None,
            revision=None,
            subfolder="",
            trust_remote_code=False,
        )
