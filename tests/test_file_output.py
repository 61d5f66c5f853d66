"""`score --file --output` and `fill-mask --file --output` in one process: the file holds the JSON Lines `--json`
prints, byte for byte; `--resume` after a crash (whole lines kept, a torn last line redone) gives the uninterrupted
file; and the options that do not go together are refused before any model runs."""

from __future__ import annotations

import json

import pytest

from gbcli.warm.client import wants_server
from tests.cli_helpers import assert_user_error, run

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# 40 texts: two chunks of `score` (32 texts each), so a resume starts inside and after the first.
TEXTS = [
    f"the {animal} {verb} in the {place} ."
    for animal in ("duck", "cow", "owl", "dog", "cat")
    for verb in ("quacks", "moos")
    for place in ("park", "farm", "barn", "wood")
]


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("texts") / "texts.txt"
    path.write_text("\n".join(TEXTS[:20]) + "\n\n" + "\n".join(TEXTS[20:]) + "\n", encoding="utf-8")  # an empty line
    return str(path)


@pytest.fixture(scope="module")
def masks_file(tmp_path_factory) -> str:
    lines = [text.replace(" in ", " [MASK] ") for text in TEXTS[:12]] + ["no blank here ."]
    path = tmp_path_factory.mktemp("masks") / "masks.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def streamed(models, texts_file, masks_file) -> dict[str, str]:
    """What `--json` prints for each command: the bytes --output must hold."""
    score = run("score", "--file", texts_file, *models, "--json")
    fill = run("fill-mask", "--file", masks_file, *models, "--json", "--top-k", "3")
    assert score.exit_code == 0 and fill.exit_code == 0, score.stderr + fill.stderr
    return {"score": score.stdout, "fill-mask": fill.stdout}


CHUNK_RECORDS = {"score": 32, "fill-mask": 128}  # the records of one chunk (no empty line in the first chunk)
COMMANDS = {"score": ("texts_file", ()), "fill-mask": ("masks_file", ("--top-k", "3"))}


def _job(request, command: str, models: list[str], out, *extra: str):
    file = request.getfixturevalue(COMMANDS[command][0])
    return file, run(command, "--file", file, *models, *COMMANDS[command][1], "--output", str(out), "--json", *extra)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_output_holds_what_json_prints_and_stdout_the_summary(request, command, models, streamed, tmp_path):
    out = tmp_path / "out.jsonl"
    file, result = _job(request, command, models, out)
    assert result.exit_code == 0, result.stderr
    assert out.read_text(encoding="utf-8") == streamed[command]
    summary = json.loads(result.stdout)
    lines = len(streamed[command].splitlines())
    assert summary == {
        "kind": "summary",
        "file": file,
        "output": str(out),
        "lines": lines,
        "resumed": 0,
        "failed": 1 if command == "fill-mask" else 0,
    }
    if command == "fill-mask":  # the line with no blank says why in its record, and the run says so at the end
        assert "1 of 13 lines could not be filled" in result.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kept", [0, 5, 33])
def test_resume_after_a_crash_gives_the_uninterrupted_file(request, command, kept, models, streamed, tmp_path):
    """A kill leaves whole lines and at most one torn one: the chunks held whole are kept, the chunk the kill cut
    (its whole lines and the torn one) is done again whole."""
    expected = streamed[command].encode("utf-8")
    records = expected.splitlines(keepends=True)
    kept = min(kept, len(records) - 1)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(records[:kept]) + records[kept][: len(records[kept]) // 2])
    _, result = _job(request, command, models, out, "--resume")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == expected
    assert json.loads(result.stdout)["resumed"] == kept // CHUNK_RECORDS[command] * CHUNK_RECORDS[command]


def test_resume_of_a_finished_file_scores_nothing_and_keeps_it(request, models, streamed, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(streamed["score"], encoding="utf-8")
    _, result = _job(request, "score", models, out, "--resume")
    assert result.exit_code == 0, result.stderr
    assert out.read_text(encoding="utf-8") == streamed["score"]
    assert json.loads(result.stdout)["resumed"] == len(streamed["score"].splitlines())


def test_the_table_view_says_where_the_lines_are(texts_file, models, tmp_path):
    out = tmp_path / "out.jsonl"
    result = run("score", "--file", texts_file, *models, "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"40 lines of {texts_file} are in {out}.\n"


def test_resume_refuses_a_file_of_another_command_input_or_model(request, models, streamed, tmp_path, gpt_path):
    out = tmp_path / "out.jsonl"
    out.write_text(streamed["fill-mask"], encoding="utf-8")
    assert_user_error(_job(request, "score", models, out, "--resume")[1], 2, "not a score record")
    out.write_text(streamed["score"].replace("the duck", "the swan", 1), encoding="utf-8")
    assert_user_error(_job(request, "score", models, out, "--resume")[1], 2, "another input")
    out.write_text(streamed["score"], encoding="utf-8")
    assert_user_error(_job(request, "score", models, out, "--resume", "--bits")[1], 2, "other models or conventions")
    assert_user_error(_job(request, "score", models, out, "--resume", "--tokens")[1], 2, "other models or conventions")
    out.write_text(streamed["fill-mask"], encoding="utf-8")
    assert_user_error(
        _job(request, "fill-mask", ["--gpt", str(gpt_path), "--models", "gpt"], out, "--resume")[1], 2, "other models"
    )


@pytest.mark.parametrize("other", [("--top-k", "4"), ("--targets", "duck"), ("--targets", "duck,cow")])
def test_fill_mask_resume_refuses_a_file_made_with_other_options(request, models, streamed, tmp_path, other):
    """Half a file made with --top-k 3 and no targets: resuming it with other options would mix two kinds of
    line; the records say which options made them. The same options resume it."""
    records = streamed["fill-mask"].splitlines(keepends=True)
    assert {(r["top_k"], tuple(r["targets"])) for r in map(json.loads, records)} == {(3, ())}
    out = tmp_path / "out.jsonl"
    out.write_text("".join(records[:4]), encoding="utf-8")
    file = request.getfixturevalue("masks_file")
    refused = run("fill-mask", "--file", file, *models, "--top-k", "3", *other, "--output", str(out), "--resume")
    assert_user_error(refused, 2, "other models or options")
    assert out.read_text(encoding="utf-8") == "".join(records[:4])
    _, resumed = _job(request, "fill-mask", models, out, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert out.read_text(encoding="utf-8") == streamed["fill-mask"]


BAD_OPTIONS = [
    (["score", "a text", "--output", "{out}"], "go with --file"),
    (["score", "--file", "{file}", "--resume"], "--resume needs --output"),
    (["score", "--file", "{file}", "--force"], "--force goes with --output"),
    (["score", "--file", "{file}", "--output", "{out}", "--csv"], "--csv"),
    (["score", "--file", "{file}", "--output", "{existing}"], "already exists"),
    (["score", "--file", "{file}", "--output", "{folder}"], "is a folder"),
    (["fill-mask", "the [MASK] quacks .", "--output", "{out}"], "go with --file"),
    (["fill-mask", "--file", "{file}", "--resume"], "--resume needs --output"),
    (["fill-mask", "--file", "{file}", "--output", "{existing}"], "already exists"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_OPTIONS)
def test_output_options_that_do_not_go_together_are_refused(args, fragment, tmp_path, models):
    (tmp_path / "in.txt").write_text("the [MASK] quacks .\n", encoding="utf-8")
    (tmp_path / "existing.jsonl").write_text("{}\n", encoding="utf-8")
    places = {
        "file": tmp_path / "in.txt",
        "out": tmp_path / "new.jsonl",
        "existing": tmp_path / "existing.jsonl",
        "folder": tmp_path,
    }
    result = run(*[arg.format(**places) for arg in args], *models)
    assert_user_error(result, 2, fragment)
    assert (tmp_path / "existing.jsonl").read_text() == "{}\n" and not (tmp_path / "new.jsonl").exists()


def test_file_jobs_into_output_and_torchrun_processes_are_not_sent_to_a_server(monkeypatch):
    """A warm server would hold the job for hours, and under torchrun each process must do its own share."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert wants_server(["score", "--file", "f.txt", "--json"])
    assert not wants_server(["score", "--file", "f.txt", "--output", "out.jsonl"])
    assert not wants_server(["fill-mask", "--file", "f.txt", "-o", "out.jsonl"])
    assert not wants_server(["pairs", "--file", "f.tsv", "--output=out.jsonl"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not wants_server(["score", "--file", "f.txt", "--json"])
