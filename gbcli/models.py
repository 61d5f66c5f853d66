"""Resolve, load and check the models gbcli compares.

Three families, one loader: GPT-style causal LMs (`--gpt`), BERT-style masked LMs (`--bert`) and BART-style
encoder-decoders (`--bart`). A model spec is a hub id or a local folder. Each model is loaded once per
process, in eval mode, and its kind is checked against the flag it was given, so that a masked LM passed to
`--gpt` is refused instead of silently growing a random causal head.

torch and transformers are imported inside functions so that `gbcli --help` never pays for them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gbcli.errors import RUNTIME, GbcliError, usage_error

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
        "gpt", "--gpt", "GBCLI_GPT", "gpt2", "causal", "a causal language model",
        "gpt2, distilgpt2, gpt2-medium",
        "causal language modelling (predict the next token)", "causal (left to right)", "GPT",
    ),
    "bert": FamilyInfo(
        "bert", "--bert", "GBCLI_BERT", "bert-base-uncased", "masked", "a masked language model",
        "bert-base-uncased, distilbert-base-uncased, roberta-base",
        "masked language modelling (predict hidden tokens)", "bidirectional", "BERT",
    ),
    "bart": FamilyInfo(
        "bart", "--bart", "GBCLI_BART", "facebook/bart-base", "seq2seq", "an encoder-decoder (seq2seq) model",
        "facebook/bart-base, facebook/bart-large",
        "denoising (reconstruct corrupted text)", "bidirectional encoder, causal decoder", "BART",
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
        limit = self.max_positions
        if tokens > limit:
            raise usage_error(
                f"{self.name} can hold at most {limit} tokens (its maximum positions), but {what} needs {tokens}.",
                hint,
            )

    def require_mask_token(self, purpose: str, hint: str, *, exit_code: int = RUNTIME) -> int:
        """The model's mask token id, or a one-sentence refusal: "<model> has no mask token, so it cannot
        <purpose>." (a checkpoint that is a masked LM by architecture may still ship a tokenizer without one)."""
        mask_id = self.tokenizer.mask_token_id
        if self.tokenizer.mask_token is None or mask_id is None:
            raise GbcliError(f"{self.name} has no mask token, so it cannot {purpose}.", hint, exit_code=exit_code)
        return int(mask_id)


def display_name(spec: str) -> str:
    """A short display name: the hub id, or a local folder's name."""
    path = Path(spec)
    return path.name if path.exists() else spec


def max_positions(config: Any, tokenizer: Any = None) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa reserves two positions for its padding offset.
            if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
                return value - 2
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and limit < 1_000_000 else 512


def resolve_spec(family: Family, spec: str | None) -> str:
    """The model spec to use: the flag's value, else its environment variable, else the family's default."""
    info = FAMILY_INFO[family]
    return spec or os.environ.get(info.env) or info.default


def looks_like_path(spec: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else that names the file system is a path."""
    if os.path.lexists(spec):  # lexists: a dangling or looping symbolic link names the file system too
        return True
    return spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec)


def offline_requested(options: LoadOptions) -> bool:
    return options.offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


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


def classify_config(config: Any) -> str:
    """causal, masked, seq2seq or encoder: what a checkpoint is, from the architecture it was saved as."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    seq2seq = set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values())
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    masked = set(MODEL_FOR_MASKED_LM_MAPPING_NAMES.values())
    for arch in getattr(config, "architectures", None) or []:
        # Order matters: BART's conditional-generation class is also listed as a masked LM.
        if arch in seq2seq:
            return "seq2seq"
        if arch in masked:
            return "masked"
        if arch in causal:
            return "causal"
        if arch.endswith(("Model", "Encoder")) and "For" not in arch:
            return "encoder"
    # No architecture recorded: fall back on the model type.
    model_type = getattr(config, "model_type", "")
    if getattr(config, "is_encoder_decoder", False) or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "masked"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    return "encoder"


# Checkpoints transformers lists among its causal LMs that do not predict each token from the ones to its left:
# gbcli's left-to-right numbers (generate, score, fill-mask) would not be the model's. Architecture → why.
NOT_LEFT_TO_RIGHT: dict[str, str] = {
    "XLNetLMHeadModel": "XLNet is a permutation language model: it predicts tokens in sampled orders through "
    "two-stream attention over memory",
}
# Encoders whose causal-LM head (BertLMHeadModel, RobertaForCausalLM ...) masks the right context only when the
# config sets is_decoder; without it the "causal" model reads both sides.
DECODER_ONLY_IF_CONFIGURED = frozenset({
    "bert", "big_bird", "camembert", "data2vec-text", "electra", "ernie", "megatron-bert", "rembert", "roberta",
    "roberta-prelayernorm", "roc_bert", "roformer", "xlm-roberta", "xlm-roberta-xl", "xmod",
})


def refuse_unsupported_architecture(config: Any, kind: str, spec: str, flag: str) -> None:
    """Refuse, by name, an architecture whose numbers gbcli cannot give as the model's own."""
    arch = _arch(config)
    reason = NOT_LEFT_TO_RIGHT.get(arch)
    decoder_only_if_configured = kind == "causal" and config.model_type in DECODER_ONLY_IF_CONFIGURED
    if reason is None and decoder_only_if_configured and not getattr(config, "is_decoder", False):
        reason = f"{arch} attends to both sides unless its config sets is_decoder, and this one does not"
    if reason is not None:
        raise GbcliError(
            f"'{spec}' for {flag} is {arch}, not a left-to-right causal LM: {reason}.",
            "Use a left-to-right causal LM such as gpt2, or a masked LM with --bert.",
            exit_code=2,
        )


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - depends on the installed hub client
        return "~/.cache/huggingface/hub"


def explain_load_failure(family: Family, spec: str, exc: BaseException, offline: bool) -> GbcliError:
    """Turn whatever transformers, huggingface_hub or safetensors raised into one sentence and a hint."""
    flag = FAMILY_INFO[family].flag
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        unreadable = _unreadable_part(path)
        if unreadable is not None:
            return GbcliError(
                f"Permission denied: '{unreadable}' for {flag} cannot be read.",
                "Check the permissions of the model folder, its files and the folders above it.",
            )
        if path.is_symlink() and not path.exists():
            return broken_link(spec, flag, path)
        if not path.exists():
            return GbcliError(
                f"Model folder '{spec}' for {flag} does not exist.",
                "Check the path, or give a hub id such as " + FAMILY_INFO[family].default + ".",
            )
        if path.is_file():
            return GbcliError(
                f"'{spec}' for {flag} is a file, not a model folder.",
                "Give the folder that holds config.json and the weights.",
            )
        if not (path / "config.json").exists():
            return GbcliError(
                f"'{spec}' for {flag} has no config.json, so it is not a model folder.",
                "Save the model with save_pretrained(), or point at the folder that holds config.json.",
            )
        if "does not appear to have" in lowered or "no file named" in lowered:
            return GbcliError(
                f"'{spec}' for {flag} has a config.json but no weights file (model.safetensors).",
                "Copy the weights into the folder, or save the model with save_pretrained().",
            )
        if "weights_only" in lowered or "weights only" in lowered:
            return GbcliError(
                f"The pickled weights in '{spec}' for {flag} contain more than tensors, so gbcli will not load "
                "them: unpickling could run arbitrary code.",
                "Convert the checkpoint to safetensors with a tool you trust.",
            )
        if "safetensor" in lowered or "header" in lowered or "deserializ" in lowered or "unpickl" in lowered:
            return GbcliError(
                f"The weights in '{spec}' for {flag} are corrupt or truncated ({_first_line(exc)}).",
                "Re-download or re-save the checkpoint.",
            )
        if "tokenizer" in lowered or "vocab" in lowered:
            return GbcliError(
                f"'{spec}' for {flag} has no usable tokenizer files ({_first_line(exc)}).",
                "Save the tokenizer into the same folder with tokenizer.save_pretrained().",
            )
        return GbcliError(f"Could not load '{spec}' for {flag}: {_first_line(exc)}.", None)
    if offline:
        return GbcliError(
            f"Model '{spec}' for {flag} is not in the local cache, and offline mode forbids downloading it.",
            f"Download it once while online (cache: {_hub_cache()}), or pass a local folder to {flag}.",
        )
    if "couldn't connect" in lowered or "connection" in lowered or "resolve" in lowered or "offline" in lowered:
        return GbcliError(
            f"Model '{spec}' for {flag} is not cached and the Hugging Face hub cannot be reached.",
            f"Connect to the network once (cache: {_hub_cache()}), or pass a local folder to {flag}.",
        )
    if "not a valid model identifier" in lowered or "repository not found" in lowered or "404" in lowered:
        return GbcliError(
            f"Model '{spec}' for {flag} does not exist on the Hugging Face hub.",
            f"Check the spelling, e.g. {FAMILY_INFO[family].examples}.",
        )
    if "revision" in lowered:
        return GbcliError(f"Revision not found for model '{spec}' ({_first_line(exc)}).", "Check --revision.")
    return GbcliError(f"Could not load model '{spec}' for {flag}: {_first_line(exc)}.", None)


def check_local_path(family: Family, spec: str) -> None:
    """Refuse a model path that is missing, a broken link or unreadable before torch loads: no hub lookup, no wait."""
    if not looks_like_path(spec):
        return
    path = Path(spec).expanduser()
    try:
        usable = path.exists() and _unreadable_part(path) is None
    except OSError:
        usable = False
    if not usable:
        raise explain_load_failure(family, spec, FileNotFoundError(str(path)), offline=False)


def _unreadable_part(path: Path) -> Path | None:
    """The model folder, or the first file in it, that this user may not read (None if all can be read)."""
    try:
        if not path.is_dir():
            return path if path.exists() and not os.access(path, os.R_OK) else None
        files = list(path.iterdir())
    except PermissionError:
        return path
    return next((f for f in files if f.is_file() and not os.access(f, os.R_OK)), None)


def broken_link(spec: str, flag: str, path: Path) -> GbcliError:
    """A model path that is a symbolic link to nowhere, or one of a loop of links."""
    try:
        path.resolve(strict=True)
        where = "a missing target"
    except RuntimeError:  # Python < 3.13 reports a loop so
        where = "itself, in a loop of links"
    except OSError as exc:
        loop = exc.errno == errno.ELOOP
        where = "itself, in a loop of links" if loop else f"'{os.readlink(path)}', which does not exist"
    return GbcliError(f"'{spec}' for {flag} is a symbolic link to {where}.",
                      "Point the link at the model folder, or give the folder itself.")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".")[:200]


# Whether the hub answered this process's one probe (None: not asked yet). When it did not, nothing goes to the
# network again: huggingface_hub would retry each file for ~28 s before giving up.
_HUB_REACHABLE: bool | None = None


def hub_reachable(timeout: float = 1.5) -> bool:
    """Can the hub's host be reached at all? One TCP connection, once per process, bounded by `timeout`.

    Name resolution runs in a daemon thread, since a resolver with no network may block far longer than any
    socket timeout.
    """
    global _HUB_REACHABLE
    if _HUB_REACHABLE is not None:
        return _HUB_REACHABLE
    import socket
    import threading
    from urllib.parse import urlsplit

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    addresses: list[Any] = []

    def resolve() -> None:
        try:
            addresses.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError:
            pass

    started = time.monotonic()
    resolver = threading.Thread(target=resolve, daemon=True)
    resolver.start()
    resolver.join(timeout)
    reachable = False
    for family_, type_, proto, _, address in list(addresses)[:2]:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            break
        try:
            with socket.socket(family_, type_, proto) as probe:
                probe.settimeout(left)
                probe.connect(address)
            reachable = True
            break
        except OSError:
            continue
    _HUB_REACHABLE = reachable
    return reachable


def _is_cached(spec: str, revision: str | None) -> bool:
    """Is this hub id's config in the local Hugging Face cache? (A cheap look at the cache folder.)"""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec, "config.json", revision=revision)
    except Exception:  # an id the hub client rejects is not cached; loading explains it
        return False
    return isinstance(found, str)


def _unavailable(family: Family, spec: str, options: LoadOptions) -> GbcliError | None:
    """Why this model cannot be loaded, found without loading anything; None when it may load."""
    offline = offline_requested(options)
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if path.is_dir() and (path / "config.json").exists():
            return None
        return explain_load_failure(family, spec, FileNotFoundError(spec), offline)
    if _is_cached(spec, options.revision):
        return None
    if offline:
        return explain_load_failure(family, spec, FileNotFoundError(spec), offline=True)
    if hub_reachable():
        return None
    return _NotCachedNoNetwork(family, spec)


class _NotCachedNoNetwork(GbcliError):
    """A hub id that is not cached while the hub cannot be reached (several of them are reported as one)."""

    def __init__(self, family: Family, spec: str) -> None:
        self.family, self.spec = family, spec
        super().__init__(
            f"Model {self.described()} is not cached, and the Hugging Face hub cannot be reached.",
            _no_network_hint([family]),
        )

    def described(self) -> str:
        # `models/bert-tiny` is a valid hub id and a relative path alike: say that it is neither.
        typed = "/" in self.spec and self.spec != FAMILY_INFO[self.family].default
        folder = " (no local folder of that name either)" if typed else ""
        return f"'{self.spec}' for {FAMILY_INFO[self.family].flag}{folder}"


def _no_network_hint(families: list[Family]) -> str:
    flags = [FAMILY_INFO[family].flag for family in families]
    flags = ", ".join(flags[:-1]) + " and " + flags[-1] if len(flags) > 1 else flags[0]
    folder = "a local folder" if len(families) == 1 else "local folders"
    return f"Connect to the network once (cache: {_hub_cache()}), or pass {folder} to {flags}."


def check_available(requests: list[tuple[Family, str]], options: LoadOptions | None = None) -> None:
    """Refuse at once, before any model loads, when a requested model cannot be had: all of them in one message.

    A missing folder or an uncached hub id without network would otherwise surface only after the models before
    it had loaded, one per run, each after huggingface_hub's retries.
    """
    options = options or LoadOptions()
    problems = [problem for family, spec in requests if (problem := _unavailable(family, spec, options))]
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    uncached = [problem for problem in problems if isinstance(problem, _NotCachedNoNetwork)]
    others = [problem for problem in problems if not isinstance(problem, _NotCachedNoNetwork)]
    messages = [problem.message for problem in others]
    hints = [problem.hint for problem in others if problem.hint]
    if uncached:
        names = ", ".join(problem.described() for problem in uncached)
        verb = "is" if len(uncached) == 1 else "are"
        messages.append(f"{names} {verb} not cached, and the Hugging Face hub cannot be reached.")
        hints.append(_no_network_hint([problem.family for problem in uncached]))
    raise GbcliError(
        f"{len(problems)} models cannot be loaded. " + " ".join(messages),
        " ".join(dict.fromkeys(hints)) or None,
        exit_code=max(problem.exit_code for problem in problems),
    )


_CACHE: dict[tuple, LoadedModel] = {}
# When models were last asked for, by cache key: a warm process (`gbcli serve`) unloads the idle ones.
LAST_USED: dict[tuple, float] = {}
# Set by `gbcli shell` and `gbcli serve`: there the next command reuses the models, so none is let go after use.
KEEP_LOADED = False


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
    key = (family, spec, _files_identity(spec), options, need_head)
    with_head = (*key[:-1], True)
    if not need_head and with_head in _CACHE:  # a model that passed the stricter check serves this one as well
        key = with_head
    LAST_USED[key] = time.monotonic()
    if key in _CACHE:
        return _CACHE[key]
    loaded = _load(family, spec, options, need_head)
    _CACHE[key] = loaded
    return loaded


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
    holds no reference cycle, and `gc.collect()` would cost ~0.2 s). The LoadedModel keeps its tokenizer and
    config; the next `load_model` for the same checkpoint reads it anew.
    """
    if KEEP_LOADED or isinstance(lm.model, ReleasedModel):
        return
    for key in [key for key, cached in _CACHE.items() if cached is lm]:
        del _CACHE[key]
    lm.extras.clear()
    lm.model = ReleasedModel(lm.model.config, lm.name)  # type: ignore[assignment]


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
        AutoTokenizer,
    )

    started = time.perf_counter()
    source = str(Path(spec).expanduser()) if looks_like_path(spec) else spec
    common: dict[str, Any] = {"revision": options.revision, "trust_remote_code": False}
    if offline:
        common["local_files_only"] = True
    if not offline and not looks_like_path(spec):  # an uncached hub id downloads here, its bytes shown as they come
        from gbcli.download import download_missing

        download_missing(spec, options.revision, info.flag)
    try:
        config = _from_cache_first(AutoConfig.from_pretrained, source, common)
    except Exception as exc:
        raise explain_load_failure(family, spec, exc, offline) from exc

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

    check_layer_count(spec, info.flag, source, config)
    model_class = {"causal": AutoModelForCausalLM, "masked": AutoModelForMaskedLM,
                   "seq2seq": AutoModelForSeq2SeqLM, "encoder": AutoModel}[kind]
    # transformers imports the modeling code lazily, on the first model built (~1,000 modules, most of a cold
    # load): resolve the class first so that this one-time cost is reported as start-up, not as this model's load.
    resolving = time.perf_counter()
    with contextlib.suppress(Exception):  # an unmapped config fails below, with its own message
        model_class._model_mapping[type(config)]
    resolve_seconds = time.perf_counter() - resolving
    try:
        model, loading = _from_cache_first(
            model_class.from_pretrained,
            source,
            # Mismatched shapes load (as random tensors) so that we can name them, then refuse (check_shapes).
            {**common, "config": config, "dtype": dtype, "output_loading_info": True, "ignore_mismatched_sizes": True},
        )
    except Exception as exc:
        raise explain_load_failure(family, spec, exc, offline) from exc

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

    check_finite_weights(spec, info.flag, model)
    try:
        tokenizer = _from_cache_first(AutoTokenizer.from_pretrained, source, common)
    except Exception as exc:
        raise GbcliError(
            f"Could not load the tokenizer of '{spec}' for {info.flag}: {_first_line(exc)}.",
            "Save the tokenizer into the model folder with tokenizer.save_pretrained().",
        ) from exc

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
        import_seconds=started - importing + resolve_seconds,
    )


def check_shapes(spec: str, flag: str, mismatched: Any) -> None:
    """Refuse weights whose shapes differ from what config.json builds, naming the tensor and both shapes."""
    if not mismatched:
        return
    name, stored, expected = sorted(mismatched, key=lambda item: item[0])[0]
    more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
    raise GbcliError(
        f"The weights of '{spec}' for {flag} do not fit its config.json: {name} is {list(stored)} in the "
        f"checkpoint but {list(expected)} in the model the config describes{more}.",
        "Use the config.json that was saved with these weights.",
    )


def checkpoint_tensor_names(folder: Path) -> list[str] | None:
    """The tensor names of a local safetensors checkpoint, from its header or index alone (no weight is read)."""
    import json
    import struct

    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
        single = folder / "model.safetensors"
        if not single.is_file():
            return None
        with single.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:  # not a real header: the loader will call the file corrupt
                return None
            return [k for k in json.loads(handle.read(length)) if k != "__metadata__"]
    except (OSError, ValueError, struct.error):
        return None  # unreadable or corrupt: the loader explains it


_LAYER_INDEX = re.compile(r"^(.*?\.(?:h|layer|layers|block|blocks))\.(\d+)\.")


def check_layer_count(spec: str, flag: str, source: str, config: Any) -> None:
    """Refuse a config.json that asks for more layers than the checkpoint holds, before anything is built.

    A config with `n_layer: 10000` next to GPT-2's 12 layers of weights would first build 10,000 layers (minutes,
    gigabytes) only to find them missing; counting the layer indices in the safetensors header costs nothing.
    """
    folder = Path(source)
    names = checkpoint_tensor_names(folder) if folder.is_dir() else None
    if not names:
        return
    stacks: dict[str, int] = {}
    for name in names:
        match = _LAYER_INDEX.match(name)
        if match:
            stacks[match.group(1)] = max(stacks.get(match.group(1), 0), int(match.group(2)) + 1)
    if not stacks:
        return
    wanted = (getattr(config, "encoder_layers", 0) or 0) + (getattr(config, "decoder_layers", 0) or 0)
    wanted = wanted or getattr(config, "num_hidden_layers", 0) or 0
    held = sum(stacks.values())
    if isinstance(wanted, int) and wanted > held:
        raise GbcliError(
            f"The config.json of '{spec}' for {flag} asks for {wanted} layers, but its weights hold {held}: the "
            "rest would be random, and building them first could exhaust the memory.",
            "Use the config.json that was saved with these weights.",
        )


def check_finite_weights(spec: str, flag: str, model: Any) -> None:
    """Refuse a model with a NaN or an infinity in its weights: every number it computes would be meaningless.

    One float32 sum per tensor is a NaN or an infinity if any element is one (~0.03 s for GPT-2-small's 124M
    weights on a laptop CPU); a sum that merely overflowed is told apart by the exact (slower) test.
    """
    import torch

    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
            continue
        bad = tensor[~torch.isfinite(tensor)]
        if bad.numel():
            kind = "NaN" if bool(bad.isnan().any()) else "infinite values"
            raise GbcliError(
                f"The weights of '{spec}' for {flag} hold {kind} ({bad.numel()} in {name}), so every number the "
                "model computes would be meaningless.",
                "The checkpoint is damaged: download or save it again.",
            )


# Files that hold a tokenizer's vocabulary, one of which every saved tokenizer with a vocabulary has.
TOKENIZER_VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "*.model", "*.tiktoken",
                              "vocab.*", "spiece.*", "sentencepiece*")


def tokenizer_covers_embeddings(tokens: int, rows: int) -> bool:
    """Whether a tokenizer of `tokens` ids can belong to input embeddings of `rows` rows.

    More tokens than rows never: an id past the last row has no embedding. Fewer is normal by a little: embeddings
    are padded to a multiple of 64 or 128 for speed (OPT: 50,265 tokens, 50,272 rows; T5: 32,100 and 32,128), or
    keep a few percent of rows in reserve (Phi-2: 50,295 and 51,200, 1.8 %; Qwen2: 0.2 %). Far fewer means the
    tokenizer is not the model's: transformers 5 builds an empty default tokenizer (BERT's has 5 tokens) for a
    folder without tokenizer files, and every word would become [UNK]. So fewer tokens pass when the unused rows
    are padding (rows a multiple of 64, fewer than 128 unused, and the tokenizer holds most of them) or at most 5 %.
    """
    if tokens > rows:
        return False
    unused = rows - tokens
    padding = rows % 64 == 0 and unused < 128 and tokens * 2 > rows
    return padding or unused <= rows * 0.05


def check_tokenizer_matches(spec: str, flag: str, source: str, tokens: int, rows: int) -> None:
    """Refuse a tokenizer that does not belong to the model's embeddings (see tokenizer_covers_embeddings)."""
    if tokenizer_covers_embeddings(tokens, rows):
        return
    folder = Path(source)
    if tokens < rows and folder.is_dir() and not any(any(folder.glob(p)) for p in TOKENIZER_VOCABULARY_FILES):
        raise GbcliError(
            f"'{spec}' for {flag} has no tokenizer files (tokenizer.json, vocab.txt, ...): transformers would put "
            f"an empty tokenizer of {tokens} token{'s' if tokens != 1 else ''} in place of the model's {rows}, and "
            "every number would be about unknown tokens.",
            "Save the tokenizer into the model folder with tokenizer.save_pretrained().",
        )
    if tokens > rows:
        relation = f"{tokens} tokens but the model's embeddings hold only {rows}"
    else:
        relation = f"only {tokens} tokens but the model's embeddings hold {rows}"
    raise GbcliError(
        f"The tokenizer of '{spec}' for {flag} has {relation}: they do not belong together.",
        "Save the model and the tokenizer it was trained with into one folder.",
    )


def _arch(config: Any) -> str:
    archs = getattr(config, "architectures", None) or [getattr(config, "model_type", "unknown")]
    return archs[0]


def _from_cache_first(loader: Any, source: str, kwargs: dict[str, Any]) -> Any:
    """Look in the local cache before the network: a cached model then loads with no hub round trip."""
    if kwargs.get("local_files_only") or os.path.isdir(source):
        return loader(source, **kwargs)
    try:
        return loader(source, **{**kwargs, "local_files_only": True})
    except OSError:
        if _HUB_REACHABLE is False:  # the probe found no network: the hub's retries would only add ~28 s
            raise
        return loader(source, **kwargs)
