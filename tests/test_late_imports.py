"""A module's imports stand at its head, where a reader finds what it depends on; an import inside a function is
kept only where one of three rules names why (CONTRIBUTING.md, "The layer rules"):

1. `gbcli/cli/`: a command imports the rooms below the CLI (`warm`, `jobs`, `render`, `tasks`, `lm`, `loading`)
   and the heavy libraries inside its own body, so that `gbcli --help` imports the command modules alone
   (gbcli/cli/__init__.py says so).
2. A start-up module (START_UP: what `gbcli --help`, the warm client, `ps`, `stop`, `config`, `tokenize` and a usage
   error in a command's text import, before any model loads) imports a heavy library (HEAVY) inside the function
   that uses it: those paths never pay for torch (tests/test_startup.py, tests/test_student_edges.py).
3. Any other late import says why on its line, or on a comment line just above it: `# late: REASON`, REASON one of
   REASONS (more words may follow in brackets), and the reason must hold for that import.

The scan is of gbcli's source (ast); START_UP is checked against what those paths really import.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "gbcli"

# What the light paths below must not pay for (--help not even Rich).
HEAVY = {"torch", "transformers", "numpy", "tokenizers", "huggingface_hub", "safetensors", "rich"}
# The rooms a CLI command imports inside its body (rule 1).
CLI_LATE_ROOMS = ("gbcli.warm", "gbcli.jobs", "gbcli.render", "gbcli.tasks", "gbcli.lm", "gbcli.loading")
# An optional extra's import name → its distribution, which pyproject.toml must list under an extra, not a dependency.
EXTRAS = {
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "scipy": "scikit-learn",
    "joblib": "scikit-learn",
    "threadpoolctl": "scikit-learn",
    "accelerate": "accelerate",
}
# Standard-library modules some platforms lack (Windows).
PLATFORM_ONLY = {"fcntl", "termios", "tty", "pty", "resource", "msvcrt", "winreg"}
REASONS = {
    "start-up": "keeps a light path (START_UP) free of what only some of its commands need",
    "extra": "an optional dependency, missing unless its extra is installed (its error then says which)",
    "platform": "a standard-library module some platforms lack",
    "probe": "a private module of torch or transformers that a speed path's probe looks into: a release that moves it"
    " turns that path off (gbcli.loading.capability), where an import at the top would fail the whole module",
}
LATE = re.compile(r"#\s*late:\s*([a-z-]+)")

# The modules the light paths import (test_start_up_is_what_the_light_paths_import keeps it exact).
START_UP = {
    "gbcli",
    "gbcli.cli",
    "gbcli.cli.analysis",
    "gbcli.cli.config",
    "gbcli.cli.fill_mask",
    "gbcli.cli.finetune",
    "gbcli.cli.generation",
    "gbcli.cli.options",
    "gbcli.cli.probe",
    "gbcli.cli.reporting",
    "gbcli.cli.scoring",
    "gbcli.cli.serve",
    "gbcli.cli.streams",
    "gbcli.cli.tour",
    "gbcli.entry",
    "gbcli.errors",
    "gbcli.jobs",
    "gbcli.jobs.builtin_tasks",
    "gbcli.jobs.distributed",
    "gbcli.jobs.inputs",
    "gbcli.jobs.jsonl_output",
    "gbcli.jobs.labelled",
    "gbcli.jobs.plan",
    "gbcli.lm",
    "gbcli.lm.batching",
    "gbcli.lm.decoding_settings",
    "gbcli.lm.fast",
    "gbcli.lm.fast.shared_prefix",
    "gbcli.lm.fast.threads",
    "gbcli.lm.heads",
    "gbcli.lm.pooling",
    "gbcli.lm.reads",
    "gbcli.lm.teacher_forcing",
    "gbcli.loading",
    "gbcli.loading.availability",
    "gbcli.loading.capability",
    "gbcli.loading.checkpoint_checks",
    "gbcli.loading.download",
    "gbcli.loading.families",
    "gbcli.loading.fast_load",
    "gbcli.loading.models",
    "gbcli.loading.shapes",
    "gbcli.loading.versions",
    "gbcli.render",
    "gbcli.render.attention",
    "gbcli.render.attention_page",
    "gbcli.render.common",
    "gbcli.render.comparison",
    "gbcli.render.context",
    "gbcli.render.export",
    "gbcli.render.handout",
    "gbcli.render.lens",
    "gbcli.render.masking",
    "gbcli.render.messages",
    "gbcli.render.model_names",
    "gbcli.render.progress",
    "gbcli.render.scoring",
    "gbcli.render.tokenization",
    "gbcli.settings",
    "gbcli.tasks",
    "gbcli.tasks.attention",
    "gbcli.tasks.attention.maps",
    "gbcli.tasks.attention.report",
    "gbcli.tasks.attention.summary",
    "gbcli.tasks.comparison",
    "gbcli.tasks.context",
    "gbcli.tasks.decoding_options",
    "gbcli.tasks.finetune",
    "gbcli.tasks.finetune.data",
    "gbcli.tasks.finetune.plan",
    "gbcli.tasks.finetune.recipe",
    "gbcli.tasks.finetune.results",
    "gbcli.tasks.finetune.run_folder",
    "gbcli.tasks.finetune.zero_shot",
    "gbcli.tasks.finite",
    "gbcli.tasks.generation_options",
    "gbcli.tasks.labelled_data",
    "gbcli.tasks.layer_choice",
    "gbcli.tasks.lens",
    "gbcli.tasks.masking",
    "gbcli.tasks.masking.bart",
    "gbcli.tasks.masking.bert",
    "gbcli.tasks.masking.column",
    "gbcli.tasks.masking.gpt",
    "gbcli.tasks.masking.masks",
    "gbcli.tasks.masking.pipeline",
    "gbcli.tasks.masking.results",
    "gbcli.tasks.masking.text",
    "gbcli.tasks.masking.tokens",
    "gbcli.tasks.prediction",
    "gbcli.tasks.probe_options",
    "gbcli.tasks.saliency_options",
    "gbcli.tasks.scoring",
    "gbcli.tasks.seq2seq",
    "gbcli.tasks.similarity_options",
    "gbcli.tasks.tokenization",
    "gbcli.tasks.tour",
    "gbcli.tasks.tour.choice",
    "gbcli.tasks.tour.results",
    "gbcli.terminal",
    "gbcli.warm",
    "gbcli.warm.autostart",
    "gbcli.warm.client",
    "gbcli.warm.manage",
    "gbcli.warm.protocol",
    "gbcli.warm.runner",
}


@dataclass(frozen=True)
class LateImport:
    module: str  # gbcli.x.y
    line: int
    statement: str
    imported: tuple[str, ...]  # the modules it imports (for `from a import b`: a)
    reason: str | None  # the word after `# late:`, if any


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def late_imports(source: str, module: str) -> list[LateImport]:
    """Every import statement inside a function of `source` (each once, nested functions too)."""
    lines = source.splitlines()
    found: dict[int, LateImport] = {}
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in found:
                continue
            if isinstance(node, ast.Import):
                imported = tuple(alias.name for alias in node.names)
            elif node.level:  # relative: inside gbcli
                imported = (module.rsplit(".", node.level)[0] + (f".{node.module}" if node.module else ""),)
            else:
                imported = (node.module or "",)
            text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            match = LATE.search(text) or (LATE.match(above) if above.startswith("#") else None)
            found[id(node)] = LateImport(module, node.lineno, ast.unparse(node), imported, match and match.group(1))
    return sorted(found.values(), key=lambda late: late.line)


def declared_extras() -> set[str]:
    """Distributions listed under an optional extra and not among the dependencies."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name = re.compile(r"[A-Za-z0-9_.-]+")
    required = {name.match(spec).group(0).lower() for spec in project["dependencies"]}
    extras = {
        name.match(spec).group(0).lower() for specs in project["optional-dependencies"].values() for spec in specs
    }
    return extras - required


def why_not_allowed(late: LateImport, start_up: set[str], extras: set[str]) -> str | None:
    """None where a rule allows this late import, else what is wrong with it."""
    tops = {name.split(".")[0] for name in late.imported}
    if late.module.startswith("gbcli.cli") and all(
        name.startswith(CLI_LATE_ROOMS) or name.split(".")[0] in HEAVY for name in late.imported
    ):
        return None  # rule 1
    if late.module in start_up and tops <= HEAVY:
        return None  # rule 2
    if late.reason is None:
        return "no reason: move it to the top of the module, or say why with `# late: REASON`"
    if late.reason not in REASONS:
        return f"`# late: {late.reason}` is no reason this test knows ({', '.join(REASONS)})"
    if late.reason == "start-up" and late.module not in start_up:
        return "`# late: start-up` in a module that no light path imports (START_UP)"
    if late.reason == "extra" and not all(EXTRAS.get(top) in extras for top in tops):
        return "`# late: extra` for a package that is no optional extra of pyproject.toml"
    if late.reason == "platform" and not tops <= PLATFORM_ONLY:
        return "`# late: platform` for a module every platform has"
    if late.reason == "probe" and not (
        tops <= {"torch", "transformers"} and all("." in name for name in late.imported)
    ):
        return "`# late: probe` for no private module of torch or transformers"
    return None


def package_late_imports() -> list[LateImport]:
    return [
        late
        for path in sorted(PACKAGE.rglob("*.py"))
        for late in late_imports(path.read_text(encoding="utf-8"), module_name(path))
    ]


def test_every_late_import_is_allowed_by_a_rule():
    extras = declared_extras()
    refused = [
        f"{late.module}:{late.line}: {late.statement}: {why}"
        for late in package_late_imports()
        if (why := why_not_allowed(late, START_UP, extras))
    ]
    assert not refused, "\n".join(refused)


@pytest.mark.parametrize(
    ("module", "source", "allowed"),
    [
        ("gbcli.tasks.probe", "def f():\n    import json\n", False),  # a plain late import
        ("gbcli.tasks.probe", "def f():\n    import json  # late: start-up\n", False),  # probe is on no light path
        ("gbcli.tasks.probe", "def f():\n    import json  # late: because\n", False),  # no known reason
        ("gbcli.tasks.probe", "def f():\n    import torch\n", False),  # torch belongs at probe's top
        ("gbcli.tasks.lens", "def f():\n    import torch\n", True),  # rule 2: lens is a start-up module
        ("gbcli.tasks.lens", "def f():\n    from gbcli.lm.heads import MLM_HEADS\n", False),
        ("gbcli.tasks.probe", "def f():\n    from sklearn.svm import SVC  # late: extra\n", True),
        ("gbcli.tasks.probe", "def f():\n    import json  # late: extra\n", False),  # json is no extra
        ("gbcli.tasks.probe", "def f():\n    import fcntl  # late: platform (not on Windows)\n", True),
        ("gbcli.tasks.probe", "def f():\n    import json  # late: platform\n", False),
        ("gbcli.lm.fast.gpt2_step", "def f():\n    from transformers.cache_utils import C  # late: probe\n", True),
        ("gbcli.lm.fast.gpt2_step", "def f():\n    from transformers import GPT2Config  # late: probe\n", False),
        ("gbcli.warm.client", "def f():\n    # late: start-up\n    import threading\n", True),  # comment above
        ("gbcli.cli.scoring", "def f():\n    from gbcli.tasks.scoring import score_texts\n", True),  # rule 1
        ("gbcli.cli.scoring", "def f():\n    from gbcli.cli.streams import json_lines\n", False),  # not a room below
        ("gbcli.cli.scoring", "def f():\n    import json\n", False),
        ("gbcli.cli.scoring", "def f():\n    def g():\n        import json\n", False),  # nested functions too
    ],
)
def test_the_rules_refuse_an_unnamed_late_import(module, source, allowed):
    """The scan itself: what each rule lets through, and a late import no rule names refused."""
    (late,) = late_imports(source, module)
    assert (why_not_allowed(late, START_UP, declared_extras()) is None) == allowed


def test_the_extras_named_here_are_extras_of_pyproject():
    assert set(EXTRAS.values()) <= declared_extras()


def test_start_up_is_what_the_light_paths_import(tiny_models, tmp_path):
    """START_UP names exactly the modules the light paths import: none that they don't (rule 2 would excuse a late
    torch there for nothing), and a module newly on one of them shows up here, to be chosen (or kept off)."""
    models = ["--gpt", str(tiny_models["gpt"]), "--bert", str(tiny_models["bert"])]
    light_paths = [
        ["--help"],
        ["score", "--help"],
        ["ps"],
        ["stop"],
        ["config", "show"],
        ["tokenize", "the duck", *models],
        ["fill-mask", "no mask here", *models],
        ["compare", "  ", *models],
        ["lens", "the [MASK] and [MASK] .", *models],
        ["generate", "  ", *models],
        ["context", "the duck", "--change", "zebra=dog", *models],
        ["attention", "the duck", "--layer", "40", *models],
        ["similarity", "the duck", "the cow", "--layer", "40", *models],
        ["score", "  ", *models],
        ["similarity", "only one text", *models],
        ["saliency", "  ", *models],
        ["tour", "--steps", "bogus", *models],
        ["probe", "--task", "right-context", "--test", "x.jsonl", "--folds", "3", *models],
        ["finetune", "--task", "sentiment", "--resume", "--force", *models],
    ]
    probe = (
        "import sys\n"
        "from gbcli.entry import main\n"
        "for args in {paths!r}:\n"
        "    sys.argv = ['gbcli', *args]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('MODULES', sorted(m for m in sys.modules if m == 'gbcli' or m.startswith('gbcli.')), file=sys.stderr)\n"
    )
    imported: set[str] = set()
    for args in light_paths:  # one process each: what one path imports is not hidden by another's
        env = {**os.environ, "GBCLI_NO_SERVER": "1", "GBCLI_RUNTIME_DIR": str(tmp_path), "NO_COLOR": "1"}
        completed = subprocess.run(
            [sys.executable, "-c", probe.format(paths=[args])], capture_output=True, text=True, timeout=120, env=env
        )
        line = [text for text in completed.stderr.splitlines() if text.startswith("MODULES")][-1]
        imported |= set(ast.literal_eval(line.removeprefix("MODULES ")))
    assert imported == START_UP, (sorted(imported - START_UP), sorted(START_UP - imported))
