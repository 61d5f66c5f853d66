"""Shared pytest fixtures for the gbcli test-suite.

``tiny_models`` builds (once) the locally trained GPT-2 / BERT / BART fixture
models of :mod:`tests.fixtures.tiny_models` and caches them on disk across test
sessions:

* cache base: ``$GBCLI_TEST_CACHE`` if set, else
  ``<repo>/.pytest_cache/gbcli-tiny-models``;
* cache dir: ``<base>/<key>`` where ``<key>`` is a short hash of the source of
  ``tiny_models.py`` + torch / transformers / tokenizers versions, so editing
  the fixture code (or upgrading a library) triggers a rebuild.

The build happens in a temporary sibling directory which is atomically renamed
into place, so an interrupted build never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # make ``tests.fixtures`` importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures import tiny_models as _tiny_models  # noqa: E402

# No test may reach a gbcli server the user happens to run: every command runs in-process (and in every
# subprocess the tests start) unless a test starts its own server on its own socket (tests/test_serve.py).
os.environ["GBCLI_NO_SERVER"] = "1"
# Nor the settings the user keeps (gbcli.settings): an empty file, unless a test writes its own.
os.environ["GBCLI_CONFIG"] = os.devnull

# Snapshot the source *now*, right after importing it: the key must describe
# the code this process will run, even if the file is edited while a long
# session is still going (otherwise the old code could fill the new key).
_TINY_MODELS_SOURCE = Path(_tiny_models.__file__).read_bytes()
_KEY_SCHEMA = b"gbcli-tiny-models/2"
_COMPLETE_MARKER = ".complete"


def _cache_key() -> str:
    import tokenizers
    import torch
    import transformers

    h = hashlib.sha256(_KEY_SCHEMA)
    h.update(_TINY_MODELS_SOURCE)
    for version in (torch.__version__, transformers.__version__, tokenizers.__version__):
        h.update(b"\0" + version.encode())
    return h.hexdigest()[:12]


def _cache_base() -> Path:
    env = os.environ.get("GBCLI_TEST_CACHE")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT / ".pytest_cache" / "gbcli-tiny-models"


def _paths_in(directory: Path) -> dict[str, Path]:
    return {key: directory / key for key in _tiny_models.FIXTURE_KEYS}


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path):
    """Inter-process lock (POSIX ``flock``) so that concurrent sessions or
    pytest-xdist workers build the models once; others wait and reuse."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: rely on atomic rename
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tiny_models_folder() -> Path:
    """Where this environment's fixture models are (or will be) cached."""
    return _cache_base() / _cache_key()


def get_tiny_models() -> dict[str, Path]:
    """Return the fixture-model paths, building them first if not cached.

    GBCLI_TEST_MODELS names a complete folder built by another environment, used as it is: the compatibility job
    (.ci/run) reads the main run's models with the minimum versions instead of training them again (most of
    the job's time otherwise); every test compares gbcli with transformers on the same files, so what built them
    does not matter.
    """
    given = os.environ.get("GBCLI_TEST_MODELS")
    if given:
        if not (Path(given) / _COMPLETE_MARKER).is_file():
            raise RuntimeError(f"GBCLI_TEST_MODELS={given} is not a complete folder of fixture models")
        return _paths_in(Path(given))
    final = tiny_models_folder()
    if (final / _COMPLETE_MARKER).is_file():
        return _paths_in(final)

    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(final.parent / f"{final.name}.lock"):
        if (final / _COMPLETE_MARKER).is_file():  # built while we waited
            return _paths_in(final)
        # Leftovers of an interrupted build (we hold the lock, so nobody else
        # is building this key right now).
        for stale in final.parent.glob(f"{final.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)

        tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.building-", dir=final.parent))
        try:
            _tiny_models.build_all(tmp)
            (tmp / _COMPLETE_MARKER).write_text("ok\n")
            tmp.chmod(0o755)  # mkdtemp creates it 0700
            try:
                os.rename(tmp, final)  # atomic: the cache is complete or absent
            except OSError:
                # Lost a race with a builder that could not lock (non-POSIX).
                if not (final / _COMPLETE_MARKER).is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _paths_in(final)


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """Paths of the tiny fixture models.

    Keys: ``gpt``, ``bert``, ``bart``, ``bert_no_head``, ``no_weights``,
    ``corrupt_weights``, ``mismatched_tokenizer``.
    """
    return get_tiny_models()


@pytest.fixture(scope="session")
def gpt_path(tiny_models) -> Path:
    return tiny_models["gpt"]


@pytest.fixture(scope="session")
def bert_path(tiny_models) -> Path:
    return tiny_models["bert"]


@pytest.fixture(scope="session")
def bart_path(tiny_models) -> Path:
    return tiny_models["bart"]


# The trained models as transformers loads them, for the independent computations the tests compare against.
@pytest.fixture(scope="module")
def models(gpt_path, bert_path) -> list[str]:
    """The model options of a command run on the tiny GPT-2 and BERT."""
    return ["--gpt", str(gpt_path), "--bert", str(bert_path)]


@pytest.fixture(scope="module")
def gpt(gpt_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(gpt_path), AutoModelForCausalLM.from_pretrained(gpt_path).eval()


@pytest.fixture(scope="module")
def bert(bert_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(bert_path), AutoModelForMaskedLM.from_pretrained(bert_path).eval()


@pytest.fixture(scope="module")
def bart(bart_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(bart_path), AutoModelForSeq2SeqLM.from_pretrained(bart_path).eval()


@pytest.fixture(scope="session")
def long_context_gpt(tmp_path_factory, gpt_path) -> Path:
    """A random-weight GPT-2 with room for thousands of tokens, so generation runs long enough to interrupt."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("long-gpt")
    tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=8,
        n_embd=512,
        n_head=8,
        n_positions=4096,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    # Make the end-of-text token impossible, so generation never stops early by itself.
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
        model.transformer.wte.weight[tokenizer.eos_token_id] = -1e4 * model.transformer.wte.weight.abs().max()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine a thread team crawls when other
    processes share the cores. A module takes it with `pytestmark = pytest.mark.usefixtures("single_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Variables a command sets for the rest of its process (`--offline` sets HF_HUB_OFFLINE, the shell off a terminal
# NO_COLOR): in a test process they would reach every later test, whichever order (or pytest-xdist worker) runs them.
_PROCESS_WIDE_VARIABLES = ("HF_HUB_OFFLINE", "NO_COLOR")


@pytest.fixture(autouse=True)
def _process_wide_variables_do_not_leak():
    before = {name: os.environ.get(name) for name in _PROCESS_WIDE_VARIABLES}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
