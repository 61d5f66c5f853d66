"""No private name of transformers or torch enters gbcli unseen: each one is listed here, for a module whose
capability probe checks it (gbcli.loading.capability), or with the reason it needs no probe.

A private name is a `._name` attribute (read, written, or given to getattr/hasattr/setattr as a string) that gbcli
does not define itself, or an import of a `_name` or from a `_module`. The scan is of gbcli's source (ast), so a
new private name fails here until it is put behind its fast path's probe and listed. A name gbcli also defines for
itself (`self._blocks`) is taken for gbcli's own; the two libraries' private names are distinct enough from ours
that this has not hidden one.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gbcli"

# module → the private names of transformers/torch it uses, each checked by that module's FastPath probe.
PROBED = {
    "gbcli/loading/fast_load.py": {"_get_model_class", "_model_mapping", "_get_dtype_plan", "_finalize_model_loading"},
    "gbcli/lm/fast/gpt2_step.py": {"_attn_implementation"},
    "gbcli/lm/fast/decoding_loop.py": {"_update_model_kwargs_for_generation"},
    "gbcli/lm/fast/shared_prefix.py": {"_attn_implementation"},
    "gbcli/tasks/attention/maps.py": {
        "_attn_implementation",
        "_can_set_attn_implementation",
        "_from_config",
        "_buffers",
    },
}
# Private names no probe can look for, each with why it is safe to use.
UNPROBED = {
    ("gbcli/loading/fast_load.py", "_buffers"): "torch.nn.Module's buffer table, unchanged since torch 1.0",
    ("gbcli/loading/fast_load.py", "_is_hf_initialized"): "a mark fast load sets on a tensor for transformers to read; "
    "tests/test_fast_load.py fails if a loaded tensor were initialised again",
    ("gbcli/jobs/state_cache.py", "_commit_hash"): "a hub checkpoint's commit in the hidden-state cache's key, read "
    "with getattr and a default (every 5.x config has it); were it gone, a hub model updated in place could be "
    "served cached states: the key should then take huggingface_hub's revision instead",
}
STDLIB = {"_exit", "_thread"}  # os._exit, the _thread module


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


@functools.cache
def own_names() -> frozenset[str]:
    """Every private name gbcli defines: functions, classes, assigned names and attributes, fields, parameters."""
    names: set[str] = set()
    for path in _python_files():
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
    return frozenset(name for name in names if _private(name))


def foreign_private_uses(path: Path, own: frozenset[str]) -> set[str]:
    """The private names of other packages that one module uses."""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in own
        ):
            found.add(node.args[1].value)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("gbcli"):
            found.update(part for part in node.module.split(".") if _private(part))
            found.update(alias.name for alias in node.names if _private(alias.name))
        elif isinstance(node, ast.Import):
            found.update(part for alias in node.names for part in alias.name.split(".") if _private(part))
    return found


def probed_names(path: Path) -> set[str]:
    """The names a module's probe looks for: string arguments of `missing(...)` and `lacks_parameters(...)`."""
    names: set[str] = set()
    for node in ast.walk(_tree(path)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("missing", "lacks_parameters")
        ):
            names.update(arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return names


def test_every_private_name_of_transformers_or_torch_is_listed():
    own = own_names()
    unlisted = {
        (_relative(path), name)
        for path in _python_files()
        for name in foreign_private_uses(path, own)
        if name not in STDLIB
        and name not in PROBED.get(_relative(path), set())
        and (_relative(path), name) not in UNPROBED
    }
    assert not unlisted, (
        "private names of transformers/torch used outside a capability check: put each behind its fast path's "
        f"FastPath probe (gbcli.loading.capability) and list it in PROBED: {sorted(unlisted)}"
    )


@pytest.mark.parametrize("module", sorted(PROBED))
def test_each_listed_name_is_looked_for_by_its_modules_probe(module):
    path = PACKAGE.parent / module
    assert "FastPath(" in path.read_text(), f"{module} declares no FastPath"
    assert PROBED[module] <= probed_names(path), sorted(PROBED[module] - probed_names(path))


def test_the_list_names_only_what_is_used():
    """A name no longer used leaves the list, so the list stays the truth about what gbcli leans on."""
    own = own_names()
    listed = {(module, name) for module, names in PROBED.items() for name in names} | set(UNPROBED)
    used = {
        (module, name)
        for module, name in listed
        if (PACKAGE.parent / module).exists() and name in foreign_private_uses(PACKAGE.parent / module, own)
    }
    assert listed == used, sorted(listed - used)


def test_the_scan_sees_a_new_private_name(tmp_path):
    """The scan itself: a module reaching into a transformers object's private attribute is caught."""
    module = tmp_path / "new.py"
    module.write_text(
        "def f(model):\n    return model._prepare_cache_for_generation\nfrom transformers.utils._hidden import thing\n"
    )
    assert foreign_private_uses(module, own_names()) == {"_prepare_cache_for_generation", "_hidden"}
