"""Resolve, load and check the models gbcli compares.

Three families, one loader: GPT-style causal LMs (`--gpt`), BERT-style masked LMs (`--bert`) and BART-style
encoder-decoders (`--bart`). A model spec is a hub id or a local folder. Each model is loaded once per
process, in eval mode, and its kind is checked against the flag it was given, so that a masked LM passed to
`--gpt` is refused instead of silently growing a random causal head.

Whether a model can be had at all (before a long load) is `gbcli.loading.availability`; whether a checkpoint is what its
flag asks for and intact is `gbcli.loading.checkpoint_checks`.

torch and transformers are imported inside the functions that use them: a command imports this module before it
has checked its text (tests/test_late_imports.py: START_UP), and `tokenize` reads a tokenizer without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gbcli import settings
from gbcli.errors import GbcliError, usage_error
from gbcli.loading.availability import check_available as check_available  # cli.py's preflight, imported from here
from gbcli.loading.availability import (
    check_local_path,
    explain_load_failure,
    looks_like_path,
    offline_requested,
)
from gbcli.loading.availability import first_line as _first_line
from gbcli.loading.availability import from_cache_first as _from_cache_first
from gbcli.loading.checkpoint_checks import architecture_name as _arch
from gbcli.loading.checkpoint_checks import (
    check_finite_weights,
    check_layer_count,
    check_shapes,
    check_tokenizer_files,
    check_tokenizer_matches,
    classify_config,
    refuse_unsupported_architecture,
)
from gbcli.loading.families import FAMILIES as FAMILIES  # re-exported, as family_title: importers keep them
from gbcli.loading.families import FAMILY_INFO, FLAG_FOR_KIND, KIND_LABEL, Family, FamilyInfo, Kind, LoadOptions
from gbcli.loading.families import family_title as family_title
from gbcli.loading.fast_load import fast_load

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    """A model ready to run: weights in eval mode on their device, with the tokenizer that belongs to them."""

    family: Family
    spec: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str
    has_lm_head: bool
    device: torch.device
    dtype: torch.dtype
    load_seconds: float  # reading the checkpoint and building the model, without the one-time imports
    import_seconds: float = 0.0  # importing torch, transformers and this architecture's code: once per process
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return display_name(self.spec)

    @property
    def max_positions(self) -> int:
        """The longest input, in tokens, the model's position embeddings allow."""
        return max_positions(self.model.config, self.tokenizer)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def pad_id(self) -> int:
        """The id that fills a right-padded batch: the tokenizer's pad token, else the config's, else EOS, else
        [UNK], else 0.

        Which id it is changes no number: every padded position is hidden by the attention mask (and, in a causal
        model, comes after every real token), so it is a placeholder, never a token any output depends on.
        """
        tok = self.tokenizer
        for value in (tok.pad_token_id, self.model.config.pad_token_id, tok.eos_token_id, tok.unk_token_id):
            if isinstance(value, int):
                return value
        return 0

    @property
    def bos_id(self) -> int | None:
        """The token a causal LM reads before a text so that its first word is predicted too: BOS, else EOS
        (GPT-2's <|endoftext|> is both, and is what separated documents in training); None when it has neither."""
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def check_fits(self, tokens: int, what: str, hint: str = "Shorten the text.") -> None:
        """Refuse (exit 2) an input of `tokens` tokens that the model's position embeddings cannot hold; `what`
        names the input in the message ("the text with its special tokens")."""
        if tokens > self.max_positions:
            raise self.too_long_error(tokens, what, hint)

    def too_long_error(self, tokens: int, what: str, hint: str = "Shorten the text.") -> GbcliError:
        """The refusal of `check_fits`, for a caller that records it (one line of a file) instead of raising."""
        return usage_error(
            f"{self.name} can hold at most {self.max_positions} tokens (its maximum positions), but {what} needs "
            f"{tokens}.",
            hint,
        )

    def require_mask_token(self, purpose: str, hint: str) -> int:
        """The model's mask token id, or a one-sentence refusal: "<model> has no mask token, so it cannot
        <purpose>." (a checkpoint that is a masked LM by architecture may still ship a tokenizer without one).
        Exit 2 in every command: the model given is not one for the job, as a text too long for it is not."""
        mask_id = self.tokenizer.mask_token_id
        if self.tokenizer.mask_token is None or mask_id is None:
            raise usage_error(f"{self.name} has no mask token, so it cannot {purpose}.", hint)
        return int(mask_id)


def display_name(spec: str) -> str:
    """A short display name: the hub id, or a local folder's name."""
    path = Path(spec)
    return path.name if path.exists() else spec


POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len")  # the config's names, in order


def max_positions(config: Any, tokenizer: Any = None) -> int:
    for attr in POSITION_KEYS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa reserves two positions for its padding offset.
            if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
                return value - 2
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and limit < 1_000_000 else 512


def resolve_spec(family: Family, spec: str | None) -> str:
    """The model spec to use: the flag's value, else its environment variable, else the settings file's, else the
    family's default (gbcli.settings)."""
    return spec or settings.value(family)


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in {"cpu", "cuda", "mps"} and not device.startswith("cuda:"):
        raise usage_error(f"Unknown device '{device}'.", "Use one of: auto, cpu, cuda, mps.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise usage_error("--device cuda was asked for, but no CUDA GPU is available.", "Use --device cpu or auto.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise usage_error("--device mps was asked for, but MPS is not available.", "Use --device cpu or auto.")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        # float32 on CPU keeps every printed number the model's exact number; GPUs get half precision.
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in names:
        raise usage_error(f"Unknown dtype '{dtype}'.", "Use one of: auto, float32, bfloat16, float16.")
    return names[dtype]


def quiet_transformers() -> None:
    """transformers prints progress bars and load reports; gbcli reports problems itself."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # huggingface_hub logs each retry ("Retrying in 8s") itself; the one error gbcli prints says what failed.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    # torch warns about a pickle's protocol before the weights-only loader refuses it; the refusal says enough.
    warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)


_CACHE: dict[tuple, LoadedModel] = {}
# When models were last asked for, by cache key: a warm process (`gbcli serve`) unloads the idle ones.
LAST_USED: dict[tuple, float] = {}
# Set by `gbcli shell` and `gbcli serve`: there the next command reuses the models, so none is let go after use.
KEEP_LOADED = False


def _cache_key(family: Family, spec: str, options: LoadOptions, need_head: bool) -> tuple:
    """The key of `load_model`'s cache; a model loaded with its head serves a call that needs none as well."""
    key = (family, spec, _files_identity(spec), options, need_head)
    with_head = (*key[:-1], True)
    return with_head if not need_head and with_head in _CACHE else key


def is_loaded(family: Family, spec: str | None, options: LoadOptions | None = None, *, need_head: bool = True) -> bool:
    """Whether `load_model` would answer from this process's cache (a warm server, a second command in the shell)."""
    return _cache_key(family, resolve_spec(family, spec), options or LoadOptions(), need_head) in _CACHE


def load_model(
    family: Family,
    spec: str | None,
    options: LoadOptions | None = None,
    *,
    need_head: bool = True,
) -> LoadedModel:
    """Load the model for one flag, once per process.

    need_head=False (attention) accepts a bare encoder: no prediction is read from a head that isn't there.
    """
    options = options or LoadOptions()
    spec = resolve_spec(family, spec)
    key = _cache_key(family, spec, options, need_head)
    LAST_USED[key] = time.monotonic()
    if key in _CACHE:
        return _CACHE[key]
    loaded = _load(family, spec, options, need_head)
    _CACHE[key] = loaded
    return loaded


@dataclass
class LoadedTokenizer:
    """A model's tokenizer alone, for `tokenize`: what its columns read of a LoadedModel (family, name, tokenizer)
    without the weights, torch or the modeling code."""

    family: Family
    spec: str
    tokenizer: PreTrainedTokenizerBase

    @property
    def name(self) -> str:
        return display_name(self.spec)


_TOKENIZER_CACHE: dict[tuple, LoadedTokenizer] = {}


def load_tokenizer(family: Family, spec: str | None, options: LoadOptions | None = None) -> LoadedTokenizer:
    """The tokenizer of the model for one flag, once per process; the weights are never read. A model already
    loaded in this process (the warm server) lends its own."""
    options = options or LoadOptions()
    spec = resolve_spec(family, spec)
    for key, loaded in _CACHE.items():
        if key[:4] == (family, spec, _files_identity(spec), options):
            return LoadedTokenizer(family, spec, loaded.tokenizer)
    key = (family, spec, _files_identity(spec), options)
    if key not in _TOKENIZER_CACHE:
        info = FAMILY_INFO[family]
        check_local_path(family, spec)
        if offline_requested(options):
            os.environ["HF_HUB_OFFLINE"] = "1"
        quiet_transformers()
        source = str(Path(spec).expanduser()) if looks_like_path(spec) else spec
        check_tokenizer_files(spec, info.flag, source)
        common: dict[str, Any] = {"revision": options.revision, "trust_remote_code": False}
        if offline_requested(options):
            common["local_files_only"] = True
        tokenizer = _tokenizer_without_torch(source, common)
        if tokenizer is None:
            tokenizer = _load_tokenizer(source, common, spec, info)
        _TOKENIZER_CACHE[key] = LoadedTokenizer(family, spec, tokenizer)
    return _TOKENIZER_CACHE[key]


def _tokenizer_without_torch(source: str, common: dict[str, Any]) -> Any:
    """The tokenizer class its tokenizer_config.json names, loaded by that class itself; None where it names none
    (AutoTokenizer then decides from config.json). `AutoTokenizer` imports transformers' configuration code, which
    imports torch (a few seconds cold); the class alone does not. A folder's config, or a hub id's cached one."""
    if os.path.isdir(source):
        found: str | None = os.path.join(source, "tokenizer_config.json")
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "tokenizer_config.json", revision=common.get("revision"))
        found = cached if isinstance(cached, str) else None
    if found is None or not os.path.isfile(found):
        return None
    try:
        with open(found, encoding="utf-8") as handle:
            name = json.load(handle).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str):
        return None
    import transformers

    tokenizer_class = getattr(transformers, name, None)
    if tokenizer_class is None:
        return None
    with contextlib.suppress(Exception):  # anything unusual is AutoTokenizer's to load (and to explain)
        return _from_cache_first(tokenizer_class.from_pretrained, source, common)
    return None


def _files_identity(spec: str) -> tuple | None:
    """For a local folder: where it is and when its files last changed, so that a process that lives on
    (`gbcli serve`, `gbcli shell`) never answers from another folder of the same relative name, or from weights
    saved over since they were loaded."""
    if not looks_like_path(spec):
        return None
    folder = Path(spec).expanduser().resolve()
    try:
        changed = max((entry.stat().st_mtime_ns for entry in folder.iterdir()), default=0)
    except OSError:
        changed = None
    return (str(folder), changed)


def clear_cache() -> None:
    _CACHE.clear()
    LAST_USED.clear()


class ReleasedModel:
    """Stands in for a model whose weights were let go (`release_model`): its config stays readable, nothing else."""

    def __init__(self, config: Any, name: str) -> None:
        self.config = config
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        raise RuntimeError(f"the weights of {self._name} were released; load the model again to use them")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__("__call__")


def release_model(lm: LoadedModel) -> None:
    """Let go of a model's weights before the process ends, so that the next model does not stack on top of them.

    `compare` shows several models but needs them one after the other: releasing each once its sections are done
    keeps its peak memory near the largest model instead of the sum of all. The weights are memory-mapped from
    the checkpoint, so dropping the last reference unmaps them at once (no garbage collection needed: a model
    holds no reference cycle, and `gc.collect()` would walk every object of torch and transformers). The LoadedModel
    keeps its tokenizer and
    config; the next `load_model` for the same checkpoint reads it anew.
    """
    if KEEP_LOADED or isinstance(lm.model, ReleasedModel):
        return
    for key in [key for key, cached in _CACHE.items() if cached is lm]:
        del _CACHE[key]
    lm.extras.clear()
    lm.model = ReleasedModel(lm.model.config, lm.name)  # type: ignore[assignment]


def _checked_kind(config: Any, spec: str, info: FamilyInfo, need_head: bool) -> Kind:
    """The checkpoint's kind, refused when it is not the one this family's flag expects (a bare encoder is
    allowed where no head is needed)."""
    kind = classify_config(config)
    refuse_unsupported_architecture(config, kind, spec, info.flag)
    if kind == "encoder":
        if need_head:
            raise GbcliError(
                f"'{spec}' for {info.flag} is {KIND_LABEL['encoder']} ({_arch(config)}): its language-model head "
                "weights are missing, so it cannot predict tokens.",
                f"Use a checkpoint with its head, e.g. {info.examples}; `gbcli attention` works with this one.",
                exit_code=2,
            )
        # A bare encoder still has attention to show; its family decides nothing else.
    elif kind != info.kind:
        raise GbcliError(
            f"'{spec}' is {KIND_LABEL[kind]} ({_arch(config)}), but {info.flag} expects {info.kind_label}.",
            f"Pass it with {FLAG_FOR_KIND[kind]} instead, or choose e.g. {info.examples}.",
            exit_code=2,
        )
    return kind


def _checked_weights(
    model: Any, loading: dict[str, Any], kind: str, spec: str, info: FamilyInfo, need_head: bool
) -> bool:
    """Refuse mismatched shapes and missing body weights (they would be random); a missing head is refused
    where predictions are needed. Returns whether the language-model head is there."""
    check_shapes(spec, info.flag, loading.get("mismatched_keys") or [])
    missing = sorted(loading.get("missing_keys") or [])
    prefix = getattr(model, "base_model_prefix", "") + "."
    head_missing = [k for k in missing if not k.startswith(prefix)] if kind != "encoder" else []
    body_missing = [k for k in missing if k.startswith(prefix)]
    has_lm_head = kind != "encoder" and not head_missing
    if body_missing:
        raise GbcliError(
            f"The checkpoint '{spec}' for {info.flag} lacks {len(body_missing)} weights of the model itself "
            f"(e.g. {body_missing[0]}); they would be random.",
            "Check that the folder holds the complete weights of this architecture.",
        )
    if head_missing and need_head:
        raise GbcliError(
            f"'{spec}' for {info.flag} has no language-model head weights ({', '.join(head_missing[:2])}"
            f"{' ...' if len(head_missing) > 2 else ''} missing), so its predictions would come from a random head.",
            f"Use a checkpoint with its head, e.g. {info.examples}; `gbcli attention` works with this one.",
            exit_code=2,
        )
    return has_lm_head


def _load_tokenizer(source: str, common: dict[str, Any], spec: str, info: FamilyInfo) -> Any:
    """The checkpoint's own tokenizer; a folder without one is refused in one sentence."""
    from transformers import AutoTokenizer

    try:
        tokenizer = _from_cache_first(AutoTokenizer.from_pretrained, source, common)
    except Exception as exc:
        raise GbcliError(
            f"Could not load the tokenizer of '{spec}' for {info.flag}: {_first_line(exc)}.",
            "Save the tokenizer into the model folder with tokenizer.save_pretrained().",
        ) from exc
    return tokenizer


def _build_model(
    model_class: Any,
    source: str,
    config: Any,
    dtype: torch.dtype,
    common: dict[str, Any],
    family: Family,
    spec: str,
    offline: bool,
) -> tuple[Any, dict[str, Any]]:
    """The model and transformers' loading report: the short way for a plain local checkpoint (gbcli.loading.fast_load,
    which loads only what matches exactly, so its report is empty), else `from_pretrained`."""
    if looks_like_path(spec) and not common.get("revision"):
        model = fast_load(model_class, Path(source), config, dtype)
        if model is not None:
            return model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    try:
        return _from_cache_first(
            model_class.from_pretrained,
            source,
            # Mismatched shapes load (as random tensors) so that we can name them, then refuse (check_shapes).
            {**common, "config": config, "dtype": dtype, "output_loading_info": True, "ignore_mismatched_sizes": True},
        )
    except Exception as exc:
        raise explain_load_failure(family, spec, exc, offline) from exc


def _load_tokenizer_while_checking_weights(
    source: str, common: dict[str, Any], spec: str, info: FamilyInfo, model: Any
) -> Any:
    """The tokenizer, read while another thread checks that every weight is finite.

    Both take a few tenths of a second on a fresh process: the tokenizer is mostly Python parsing tokenizer.json
    (it holds the GIL), the check is torch summing every weight once (it releases the GIL), so on two cores they
    overlap. A damaged weight is reported before a tokenizer problem, as when the two ran one after the other.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gbcli-finite") as pool:
        checking = pool.submit(check_finite_weights, spec, info.flag, model)
        try:
            tokenizer = _load_tokenizer(source, common, spec, info)
        except GbcliError:
            checking.result()  # raises first if a weight is not finite
            raise
        checking.result()
    return tokenizer


# Seconds import_libraries spent before a load, counted into the next loaded model's import_seconds (the start-up
# that compare --full reports), whoever triggered the import.
_EARLY_IMPORT_SECONDS = 0.0


def libraries_imported() -> bool:
    """Whether torch and transformers are already in this process (a warm server, a second model)."""
    return "torch" in sys.modules and "transformers" in sys.modules


def import_libraries() -> None:
    """Import torch and transformers now (once per process: the first model's wait is mostly this), so that a
    spinner can say so before it says which model loads."""
    global _EARLY_IMPORT_SECONDS
    if libraries_imported():
        return
    started = time.perf_counter()
    quiet_transformers()
    import torch  # noqa: F401
    from transformers import AutoConfig  # noqa: F401

    _EARLY_IMPORT_SECONDS += time.perf_counter() - started


def _take_early_import_seconds() -> float:
    global _EARLY_IMPORT_SECONDS
    seconds, _EARLY_IMPORT_SECONDS = _EARLY_IMPORT_SECONDS, 0.0
    return seconds


def _public_mapping(kind: str) -> Any:
    """transformers' public config → model class mapping of the auto class `_load` uses for this kind."""
    from transformers.models.auto import modeling_auto

    mappings = {
        "causal": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING,
        "masked": modeling_auto.MODEL_FOR_MASKED_LM_MAPPING,
        "seq2seq": modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING,
        "encoder": modeling_auto.MODEL_MAPPING,
    }
    return mappings[kind]


def _load(family: Family, spec: str, options: LoadOptions, need_head: bool) -> LoadedModel:
    info = FAMILY_INFO[family]
    check_local_path(family, spec)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    offline = offline_requested(options)
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    importing = time.perf_counter()
    quiet_transformers()
    import torch
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
    )

    started = time.perf_counter()
    source = str(Path(spec).expanduser()) if looks_like_path(spec) else spec
    common: dict[str, Any] = {"revision": options.revision, "trust_remote_code": False}
    if offline:
        common["local_files_only"] = True
    if not offline and not looks_like_path(spec):  # an uncached hub id downloads here, its bytes shown as they come
        from gbcli.loading.download import download_missing  # late: start-up (only a hub id downloads)

        download_missing(spec, options.revision, info.flag)
    try:
        config = _from_cache_first(AutoConfig.from_pretrained, source, common)
    except Exception as exc:
        raise explain_load_failure(family, spec, exc, offline) from exc

    kind = _checked_kind(config, spec, info, need_head)

    check_layer_count(spec, info.flag, source, config)
    model_class = {
        "causal": AutoModelForCausalLM,
        "masked": AutoModelForMaskedLM,
        "seq2seq": AutoModelForSeq2SeqLM,
        "encoder": AutoModel,
    }[kind]
    # transformers imports the modeling code lazily, on the first model built (~1,000 modules, most of a cold
    # load): resolve the class first so that this one-time cost is reported as start-up, not as this model's load.
    resolving = time.perf_counter()
    with contextlib.suppress(Exception):  # an unmapped config fails below, with its own message
        _public_mapping(kind)[type(config)]
    resolve_seconds = time.perf_counter() - resolving
    model, loading = _build_model(model_class, source, config, dtype, common, family, spec, offline)
    has_lm_head = _checked_weights(model, loading, kind, spec, info, need_head)
    tokenizer = _load_tokenizer_while_checking_weights(source, common, spec, info, model)
    check_tokenizer_matches(spec, info.flag, source, len(tokenizer), model.get_input_embeddings().weight.shape[0])

    model.eval()
    try:
        model.to(device)
    except Exception as exc:  # pragma: no cover - needs a GPU
        raise GbcliError(f"Could not move '{spec}' to {device}: {_first_line(exc)}.", "Try --device cpu.") from exc
    torch.set_grad_enabled(False)
    return LoadedModel(
        family=family,
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        has_lm_head=has_lm_head,
        device=device,
        dtype=dtype,
        load_seconds=time.perf_counter() - started - resolve_seconds,
        import_seconds=started - importing + resolve_seconds + _take_early_import_seconds(),
    )
