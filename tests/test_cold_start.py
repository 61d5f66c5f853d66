"""Cold start: a model that cannot be had fails at once, and the first model's answer does not wait for the last."""

from __future__ import annotations

import shutil
import time

import pytest

from gbcli.loading import availability, models
from tests.cli_helpers import TRACEBACK, assert_user_error, run, run_installed

# A closed port on this machine: connecting is refused at once, as a hub that cannot be reached would be.
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}


@pytest.fixture
def fresh_probe(monkeypatch):
    """Each test asks the hub anew (the answer is kept per process)."""
    monkeypatch.setattr(availability, "_HUB_REACHABLE", None)
    monkeypatch.setenv("HF_ENDPOINT", NO_HUB["HF_ENDPOINT"])


def test_an_uncached_hub_id_without_network_fails_at_once_with_one_error(fresh_probe):
    started = time.monotonic()
    result = run("fill-mask", "a [MASK] b", "--models", "bert", "--bert", "gbcli-test/not-cached")
    elapsed = time.monotonic() - started
    assert_user_error(result, 1, "'gbcli-test/not-cached' for --bert", "not cached", "cannot be reached")
    assert "Retrying" not in result.stderr and "Errno" not in result.stderr
    assert result.stderr.count("error:") == 1 and result.stderr.count("hint:") == 1
    # huggingface_hub's own retries take ~28 s per model; the probe takes one refused connection.
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_every_missing_model_is_named_in_one_message_before_any_loads(fresh_probe, gpt_path, monkeypatch):
    loads: list[str] = []
    original = models._load
    monkeypatch.setattr(models, "_load", lambda family, *rest: loads.append(family) or original(family, *rest))
    result = run(
        "compare",
        "the [MASK] quacks .",
        "--gpt",
        str(gpt_path),
        "--bert",
        "./no/such/folder",
        "--with-bart",
        "--bart",
        "gbcli-test/not-cached-bart",
    )
    assert_user_error(
        result,
        1,
        "2 models cannot be loaded",
        "'./no/such/folder' for --bert does not exist",
        "'gbcli-test/not-cached-bart' for --bart",
        "cannot be reached",
    )
    assert loads == [], "no model may load before every requested one is known to be there"


def test_a_mistyped_relative_folder_is_called_neither_folder_nor_cached(fresh_probe):
    result = run("score", "a b", "--models", "bert", "--bert", "models/bert-tiny")
    assert_user_error(result, 1, "'models/bert-tiny' for --bert (no local folder of that name either)")


def test_offline_mode_reports_without_probing(monkeypatch):
    monkeypatch.setattr(availability, "_HUB_REACHABLE", None)
    monkeypatch.setattr(
        availability, "hub_reachable", lambda *a: pytest.fail("offline mode must not touch the network")
    )
    result = run("tokenize", "x", "--models", "gpt", "--gpt", "gbcli-test/absent", "--offline")
    assert_user_error(result, 1, "offline mode forbids downloading")


def test_installed_command_fails_fast_on_an_unreachable_hub():
    """Through the entry point: the error comes before torch is even imported, with no library log lines."""
    completed = run_installed("compare", "a [MASK] b", "--gpt", "gbcli-test/a", "--bert", "gbcli-test/b", env=NO_HUB)
    stderr = completed.stderr.decode()
    assert completed.returncode == 1, stderr
    assert completed.stdout == b"" and TRACEBACK not in stderr
    assert stderr.startswith("error: 2 models cannot be loaded.")
    assert "'gbcli-test/a' for --gpt" in stderr and "'gbcli-test/b' for --bert" in stderr
    assert len(stderr.strip().splitlines()) == 2, stderr  # the error and its hint, nothing else


def test_a_cached_hub_id_loads_without_network(tmp_path, gpt_path):
    """A model in the Hugging Face cache loads by its hub id while the hub is unreachable."""
    snapshot = tmp_path / "hub" / "models--gbcli-test--tiny-gpt" / "snapshots" / ("0" * 40)
    shutil.copytree(gpt_path, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {**NO_HUB, "HF_HUB_CACHE": str(tmp_path / "hub")}
    completed = run_installed(
        "tokenize", "the duck", "--models", "gpt", "--gpt", "gbcli-test/tiny-gpt", "--json", env=env
    )
    assert completed.returncode == 0, completed.stderr.decode()
    assert b"duck" in completed.stdout  # the copy in the cache was used: nothing else holds this model


def test_generate_writes_each_column_before_the_next_model_loads(gpt_path, bert_path, monkeypatch):
    """The first model's text does not wait for the second model's load."""
    import gbcli.tasks.generation.causal as causal
    import gbcli.tasks.generation.masked as masked

    events: list[tuple[str, str]] = []
    original_load = models.load_model

    def spy_load(family, *args, **kwargs):
        events.append(("load", family))
        return original_load(family, *args, **kwargs)

    def spy(runner):
        def wrapped(lm, *args, **kwargs):
            events.append(("generate", lm.family))
            return runner(lm, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(models, "load_model", spy_load)
    monkeypatch.setattr(causal, "generate_causal", spy(causal.generate_causal))
    monkeypatch.setattr(masked, "generate_masked", spy(masked.generate_masked))
    result = run(
        "generate",
        "once upon a time",
        "--greedy",
        "--max-new-tokens",
        "3",
        "--gpt",
        str(gpt_path),
        "--bert",
        str(bert_path),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert events == [("load", "gpt"), ("generate", "gpt"), ("load", "bert"), ("generate", "bert")]


def test_the_streaming_view_shows_which_model_is_loading():
    from rich.console import Console

    from gbcli.render.generation import StreamingView

    view = StreamingView("once", [("gpt", "tiny-gpt"), ("bert", "tiny-bert")])
    view.update("gpt", " upon a time")
    view.loading("bert")
    console = Console(width=80, record=True, color_system=None)
    console.print(view)
    screen = console.export_text()
    assert "once upon a time" in screen and "loading tiny-bert" in screen


def test_compare_reports_start_up_apart_from_each_models_load(gpt_path, bert_path):
    """In a fresh process the one-time imports land on the start-up line, not on the first model's load."""
    completed = run_installed(
        "compare", "the [MASK] quacks in the park .", "--gpt", str(gpt_path), "--bert", str(bert_path), "--json"
    )
    assert completed.returncode == 0, completed.stderr.decode()
    import json

    first, second = json.loads(completed.stdout)["time"]
    # The first load imports transformers' modeling code (~1,000 modules); the second finds it imported.
    assert first["import_seconds"] > 5 * second["import_seconds"]
    assert first["import_seconds"] > first["load_seconds"]
