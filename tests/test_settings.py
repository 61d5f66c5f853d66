"""The settings a user keeps (gbcli.settings) and `gbcli config`: option > environment > file > built-in default."""

from __future__ import annotations

import json
import os

import pytest

from tests.cli_helpers import TRACEBACK, assert_user_error, run, run_installed

pytestmark = pytest.mark.compat


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A settings file of this test's own (it need not exist yet)."""
    path = tmp_path / "gbcli" / "config.toml"
    monkeypatch.setenv("GBCLI_CONFIG", str(path))
    for name in ("GBCLI_GPT", "GBCLI_BERT", "GBCLI_DEVICE", "GBCLI_DTYPE", "GBCLI_KEEP_ALIVE", "GBCLI_AUTO_SERVE"):
        monkeypatch.delenv(name, raising=False)
    return path


def named_copies(tmp_path, gpt_path, *names: str) -> dict[str, str]:
    """The tiny GPT-2 under several names: which one a command loaded shows in its output."""
    found = {}
    for name in names:
        link = tmp_path / name
        link.symlink_to(gpt_path, target_is_directory=True)
        found[name] = str(link)
    return found


def loaded_gpt(*args: str, env: dict[str, str] | None = None) -> str:
    result = run("tokenize", "hi", "--models", "gpt", "--json", *args, env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["columns"][0]["model"]


def test_the_model_comes_from_the_option_then_the_environment_then_the_file(config, tmp_path, gpt_path):
    copies = named_copies(tmp_path, gpt_path, "from-file", "from-env", "from-option")
    config.parent.mkdir()
    config.write_text(f'# my models\ngpt = "{copies["from-file"]}"\n')
    assert loaded_gpt() == "from-file"
    assert loaded_gpt(env={"GBCLI_GPT": copies["from-env"]}) == "from-env"
    assert loaded_gpt("--gpt", copies["from-option"], env={"GBCLI_GPT": copies["from-env"]}) == "from-option"


def test_the_device_comes_from_the_option_then_the_environment_then_the_file(config, gpt_path):
    """A file that asks for a GPU the machine lacks fails the command; the variable, and then the option, win."""
    config.parent.mkdir()
    config.write_text('device = "cuda"\n')
    # score loads the model on the device (tokenize reads the tokenizer alone, on no device).
    args = ("score", "hi", "--models", "gpt", "--gpt", str(gpt_path))
    assert_user_error(run(*args), 2, "--device cuda was asked for")
    assert run(*args, env={"GBCLI_DEVICE": "cpu"}).exit_code == 0
    assert_user_error(run(*args, "--device", "mps", env={"GBCLI_DEVICE": "cpu"}), 2, "--device mps was asked for")
    config.write_text('device = "cpu"\n')
    assert run(*args).exit_code == 0


def test_config_shows_each_value_and_where_it_comes_from(config, monkeypatch):
    config.parent.mkdir()
    config.write_text('keep-alive = "30m"\nauto-serve = false\n')
    monkeypatch.setenv("GBCLI_DTYPE", "bfloat16")
    monkeypatch.delenv("GBCLI_NO_SERVER")  # (every test runs with it: it would decide auto-serve)
    document = json.loads(run("config", "--json").stdout)
    found = {entry["key"]: (entry["value"], entry["source"]) for entry in document["settings"]}
    assert found == {
        "gpt": ("gpt2", "default"),
        "bert": ("bert-base-uncased", "default"),
        "bart": ("facebook/bart-base", "default"),
        "device": ("auto", "default"),
        "dtype": ("bfloat16", "environment"),
        "auto-serve": (False, "file"),
        "keep-alive": ("30m", "file"),
    }
    assert document["path"] == str(config)
    view = run("config", env={"COLUMNS": "80"}).stdout
    assert f"settings file: {config}" in view.replace("\n", "") and max(map(len, view.splitlines())) <= 80
    assert "dtype       bfloat16            GBCLI_DTYPE" in view and "keep-alive  30m                 file" in view
    monkeypatch.setenv("GBCLI_NO_SERVER", "1")
    assert json.loads(run("config", "get", "auto-serve", "--json").stdout) == {
        "key": "auto-serve",
        "value": False,
        "source": "environment",
        "variable": "GBCLI_NO_SERVER",
    }


def test_set_get_unset_and_path_edit_the_file_and_keep_the_rest(config):
    config.parent.mkdir()
    config.write_text('# written by me\ndevice = "cpu"\n')
    assert run("config", "set", "keep-alive", "2h").exit_code == 0
    assert run("config", "set", "auto-serve", "off").exit_code == 0
    assert run("config", "set", "device", "auto").exit_code == 0
    assert config.read_text() == '# written by me\ndevice = "auto"\nkeep-alive = "2h"\nauto-serve = false\n'
    assert run("config", "get", "keep-alive").stdout == "2h\n"
    assert run("config", "get", "auto-serve").stdout == "false\n"
    assert json.loads(run("config", "get", "device", "--json").stdout)["source"] == "file"
    assert run("config", "unset", "keep-alive").exit_code == 0
    assert run("config", "get", "keep-alive").stdout == "10m\n"  # the built-in default again
    assert run("config", "path").stdout == f"{config}\n"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("set", "device", "gpu"), "'device' must be one of auto, cpu, cuda, mps"),
        (("set", "keep-alive", "soon"), "'keep-alive' must be a duration"),
        (("set", "auto-serve", "maybe"), "'auto-serve' must be true or false"),
        (("set", "colour", "red"), "There is no setting 'colour'"),
        (("get", "colour"), "There is no setting 'colour'"),
        (("unset", "colour"), "There is no setting 'colour'"),
    ],
)
def test_a_bad_key_or_value_is_refused_and_the_file_is_left_alone(config, args, fragment):
    config.parent.mkdir()
    config.write_text('gpt = "distilgpt2"\n')
    assert_user_error(run("config", *args), 2, fragment)
    assert config.read_text() == 'gpt = "distilgpt2"\n'


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('gpt = "distilgpt2"\ndevice = gpu\n', ["line 2 (key 'device')", "not valid TOML"]),
        ('gpt = "distilgpt2"\nbert = [\n', ["line 2 (key 'bert')", "not valid TOML"]),
        ('# mine\n\ndevice = "gpu"\n', ["line 3", "'device' must be one of auto, cpu, cuda, mps"]),
        ("keep-alive = 30\n", ["line 1", "'keep-alive' must be a quoted string"]),
        ('auto-serve = "no"\n', ["line 1", "'auto-serve' must be true or false"]),
    ],
)
def test_a_bad_settings_file_is_an_error_naming_the_file_the_key_and_the_line(config, text, fragments):
    config.parent.mkdir()
    config.write_text(text)
    result = run("tokenize", "hi")
    assert_user_error(result, 2, str(config), *fragments)
    assert "gbcli config" in result.stderr  # the hint: how to mend it
    assert run("config", "path").exit_code == 0  # and `gbcli config` itself still runs


def test_a_bad_settings_file_through_the_installed_cli_on_the_warm_client_path(config):
    """The client (which reads auto-serve before a command is forwarded) leaves the report to the command."""
    config.parent.mkdir()
    config.write_text("auto-serve = maybe\n")
    result = run_installed("tokenize", "hi", env={"GBCLI_CONFIG": str(config), "GBCLI_NO_SERVER": ""})
    assert result.returncode == 2 and result.stdout == b""
    assert b"line 1 (key 'auto-serve')" in result.stderr and TRACEBACK.encode() not in result.stderr


def test_an_unknown_key_is_a_warning_and_the_command_runs(config, gpt_path):
    config.parent.mkdir()
    config.write_text('colour = "red"\n')
    result = run("tokenize", "hi", "--models", "gpt", "--gpt", str(gpt_path))
    assert result.exit_code == 0 and "GPT" in result.stdout
    assert result.stderr.startswith(f"warning: the settings file {config}, line 1 sets 'colour'")


def test_a_bad_environment_value_names_the_variable(config, monkeypatch):
    monkeypatch.setenv("GBCLI_KEEP_ALIVE", "soon")
    assert_user_error(run("config", "get", "keep-alive"), 1, "GBCLI_KEEP_ALIVE=soon")


def test_the_settings_file_is_in_the_user_config_folder(monkeypatch, tmp_path):
    from gbcli.settings import config_path

    monkeypatch.delenv("GBCLI_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == os.path.join(tmp_path, "xdg", "gbcli", "config.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path() == os.path.join(tmp_path, "home", ".config", "gbcli", "config.toml")


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_settings_view_keeps_every_value_whole(config, monkeypatch, width):
    from gbcli.cli.config import SettingsReport, current, settings_view
    from gbcli.settings import SETTINGS
    from tests.test_layout import render

    long_folder = "/home/student/checkpoints/" + "a-rather-long-fine-tuned-model-name-" * 2 + "final"
    monkeypatch.setenv("GBCLI_BERT", long_folder)
    report = SettingsReport(str(config), [current(key) for key in SETTINGS])
    screen = render(settings_view(report), width)
    assert "GBCLI_BERT" in screen and "10m" in screen and max(len(line) for line in screen.splitlines()) <= width
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("bert "))
    end = next(i for i, line in enumerate(lines) if line.startswith("bart "))
    value_column = lines[start].index("/home")
    folded = "".join(line[value_column:].split()[0] for line in lines[start:end])
    assert folded == long_folder and "…" not in screen  # folded across lines, never cut
