"""A hub id that is not cached downloads from the hub, visibly, once; failures end in one error:/hint: pair.

The hub cannot be reached here, so a fake one (tests/fake_hub.py) serves the tiny test models on 127.0.0.1,
pointed at with HF_ENDPOINT, into a cache in a tmp folder.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from gbcli.loading import availability, download, models
from tests.cli_helpers import TRACEBACK, assert_user_error, run, run_installed
from tests.fake_hub import FakeHub

SENTENCE = "the [MASK] quacks"


@pytest.fixture()
def fake_hub(monkeypatch, tmp_path, bert_path, gpt_path):
    """The fake hub with test-org/tiny-bert and test-org/tiny-gpt, and an empty cache under tmp_path."""
    from huggingface_hub import constants

    with FakeHub({"test-org/tiny-bert": bert_path, "test-org/tiny-gpt": gpt_path}) as hub:
        cache = tmp_path / "hub-cache"
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path))
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # huggingface_hub read these at import time, and this process imported it long ago.
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(availability, "_HUB_REACHABLE", None)
        models.clear_cache()
        yield hub
        models.clear_cache()


def test_uncached_hub_id_downloads_and_answers_as_the_local_folder(fake_hub, bert_path):
    downloaded = run("fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--json")
    assert downloaded.exit_code == 0, downloaded.stderr
    local = run("fill-mask", SENTENCE, "--models", "bert", "--bert", str(bert_path), "--json")
    # The same answer, word for word and probability for probability; only the model's name differs.
    named = json.loads(downloaded.stdout)
    assert named["models"] == {"bert": "test-org/tiny-bert"}
    assert named["masks"][0]["bert"]["predictions"][0]["word"] == "duck"
    for result in (named, expected := json.loads(local.stdout)):
        result.pop("models")
        for mask in result["masks"]:
            mask["bert"].pop("model")
    assert named == expected
    # Not a terminal: one plain line per file, with its size.
    weights = (bert_path / "model.safetensors").stat().st_size
    assert f"downloading test-org/tiny-bert: model.safetensors ({download.human_size(weights)})" in downloaded.stderr
    assert "downloading test-org/tiny-bert: config.json" in downloaded.stderr
    assert TRACEBACK not in downloaded.stderr
    served = sorted(Path(p).name for p in fake_hub.file_gets())
    assert served == sorted(p.name for p in bert_path.iterdir() if p.is_file())


def test_second_run_downloads_nothing(fake_hub):
    first = run("fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--json")
    assert first.exit_code == 0, first.stderr
    requests = len(fake_hub.requests)
    models.clear_cache()  # a new process would load again, from the cache
    second = run("fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--json")
    assert second.exit_code == 0, second.stderr
    assert second.stdout == first.stdout
    assert len(fake_hub.requests) == requests, fake_hub.requests[requests:]
    assert "downloading" not in second.stderr


def test_revision_is_asked_of_the_hub(fake_hub):
    result = run(
        "fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--revision", "v1.0", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert ("GET", "/api/models/test-org/tiny-bert/revision/v1.0") in fake_hub.requests
    assert all("/resolve/v1.0/" in path for path in fake_hub.file_gets())
    # The cache now knows v1.0: the same revision again asks the hub nothing.
    asked = len(fake_hub.requests)
    models.clear_cache()
    again = run(
        "fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--revision", "v1.0", "--json"
    )
    assert again.exit_code == 0 and again.stdout == result.stdout
    assert fake_hub.requests[asked:] == []


def test_gated_repo_says_so_and_how_to_get_access(fake_hub):
    fake_hub.gated.add("test-org/tiny-bert")
    result = run("fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--json")
    assert_user_error(result, 1, "'test-org/tiny-bert' for --bert is gated", "hint: request access")
    assert result.stderr.count("error:") == 1 and result.stderr.count("hint:") == 1


def test_repo_the_hub_does_not_have_is_one_error(fake_hub):
    result = run("fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/no-such-model", "--json")
    assert_user_error(result, 1, "'test-org/no-such-model'", "does not exist on the Hugging Face hub")
    assert result.stderr.count("error:") == 1 and result.stderr.count("hint:") == 1
    assert fake_hub.file_gets() == []


def test_connection_broken_mid_file_leaves_no_complete_looking_file(fake_hub, tmp_path, bert_path):
    weights = (bert_path / "model.safetensors").stat().st_size
    fake_hub.break_after["model.safetensors"] = weights // 3
    result = run("fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--json")
    assert_user_error(result, 1, "Downloading model 'test-org/tiny-bert' for --bert failed")
    assert result.stderr.count("error:") == 1 and result.stderr.count("hint:") == 1
    cached = [p for p in (tmp_path / "hub-cache").rglob("*") if p.is_file()]
    assert not [p for p in cached if p.name == "model.safetensors"]
    assert not [p for p in cached if p.name.endswith(".incomplete")]
    assert not download.is_complete_in_cache("test-org/tiny-bert", None)


def test_rich_display_counts_the_bytes_up_to_the_file_size():
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    display = download.make_progress(console)
    size = 3_500_000
    bar_class = download.progress_bar_class(display, "model-00001-of-00002.safetensors")
    with display, bar_class(total=size, initial=0, desc="model.safetensors", unit="B", unit_scale=True) as bar:
        bar.update(size // 2)
        display.refresh()
        task = display.tasks[0]
        assert task.completed == size // 2 and task.total == size
        bar.update(size - size // 2)
        assert display.tasks[0].completed == size and display.tasks[0].finished
    screen = console.file.getvalue()
    assert "model-00001-of-00002.safetensors" in screen  # the whole file name, at 80 columns
    assert "1.8/3.5 MB" in screen and "3.5/3.5 MB" in screen  # the bytes figure moves to the file's size
    lines = [line for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen).replace("\r", "\n").split("\n")]
    assert max(len(line) for line in lines) <= 80 and not [line for line in lines if line.strip() == "MB"]


def test_plain_line_when_not_a_terminal():
    out = io.StringIO()
    bar_class = download.progress_bar_class(None, "gpt2: model.safetensors", stream=out)
    bar = bar_class(total=548_105_171)
    bar.update(548_105_171)
    bar.close()
    assert out.getvalue() == "downloading gpt2: model.safetensors (548 MB)\n"


def test_only_the_files_from_pretrained_reads_are_chosen():
    gpt2_repo = [
        "config.json",
        "generation_config.json",
        "merges.txt",
        "vocab.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "flax_model.msgpack",
        "tf_model.h5",
        "rust_model.ot",
        "64-8bits.tflite",
        "onnx/decoder_model.onnx",
        "README.md",
    ]
    chosen = download.files_to_fetch(gpt2_repo)
    assert chosen[-1] == "model.safetensors"
    assert set(chosen) == {
        "config.json",
        "generation_config.json",
        "merges.txt",
        "vocab.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    }
    sharded = [
        "config.json",
        "model.safetensors.index.json",
        "model-00002-of-00002.safetensors",
        "model-00001-of-00002.safetensors",
        "pytorch_model.bin",
    ]
    assert download.files_to_fetch(sharded)[1:] == [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert download.files_to_fetch(["config.json", "pytorch_model.bin", "vocab.txt"]) == [
        "config.json",
        "vocab.txt",
        "pytorch_model.bin",
    ]


def test_installed_gbcli_downloads_from_the_hub_hf_endpoint_names(tmp_path, bert_path):
    """The installed command reads HF_ENDPOINT as a user sets it (no patched constants), probes that host, fetches."""
    with FakeHub({"test-org/tiny-bert": bert_path}) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub-cache")}
        result = run_installed(
            "fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--json", env=env
        )
    assert result.returncode == 0, result.stderr.decode()
    assert b"downloading test-org/tiny-bert: model.safetensors" in result.stderr
    assert json.loads(result.stdout)["masks"][0]["bert"]["predictions"][0]["word"] == "duck"
    assert len(hub.file_gets()) == len([p for p in bert_path.iterdir() if p.is_file()])


def test_offline_never_asks_the_hub(fake_hub):
    result = run("fill-mask", SENTENCE, "--models", "bert", "--bert", "test-org/tiny-bert", "--offline", "--json")
    assert_user_error(result, 1, "not in the local cache", "offline")
    assert fake_hub.requests == []
