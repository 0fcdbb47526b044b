"""Layers point one way: the library (hdge_tf/) never imports the programs
(bin/, installed as hdge_tf.bin) or the shipped configs (configs/, installed as
hdge_tf.configs): programs hand configs to the library. Within the library,
generation does not depend on evaluation.

Read from the sources with `ast`, not by importing: importing any module runs
hdge_tf/__init__.py, which gathers the whole public API.
"""

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "hdge_tf"
# What the library must not reach: the CLI layer and the config files.
UPPER_LAYERS = ("hdge_tf.bin", "hdge_tf.configs")


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def imports(name: str) -> set[str]:
    """The modules `name`'s source imports (`from A import b` counts A, and A.b
    when that is a module); absolute names, relative imports resolved. Also
    `importlib.import_module("...")` calls with a literal name."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
        ):
            first = node.args[0]
            if isinstance(first, ast.JoinedStr):
                first = first.values[0] if first.values else ast.Constant("")
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value.rstrip("."))
    return found


def _in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_the_library_is_read_whole():
    """Sanity: the walk sees the library and its subpackages, not bin/ or configs/."""
    assert {"hdge_tf", "hdge_tf.generation", "hdge_tf.reproduce.plan"} <= set(MODULES)
    assert not [m for m in MODULES if any(_in_layer(m, u) for u in UPPER_LAYERS)]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_library_module_imports_neither_bin_nor_configs(name):
    upward = sorted(
        m for m in imports(name) if any(_in_layer(m, layer) for layer in UPPER_LAYERS)
    )
    assert not upward, f"{MODULES[name]} imports {upward}"


def _closure(name: str) -> set[str]:
    """Library modules `name` imports, directly or through other library modules
    (the top-level package excepted: every import runs it)."""
    seen, todo = set(), [name]
    while todo:
        for module in imports(todo.pop()):
            if module in MODULES and module != "hdge_tf" and module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def test_generation_does_not_import_evaluation():
    reached = sorted(m for m in _closure("hdge_tf.generation") if "evaluation" in m)
    assert not reached, f"hdge_tf.generation reaches {reached}"


def test_the_checks_see_an_upward_import(tmp_path, monkeypatch):
    """The checks catch what they are for: plain, from- and relative imports of
    the upper layers, and import_module with an f-string."""
    source = (
        "import hdge_tf.bin.cli\n"
        "from hdge_tf import configs\n"
        "from ..configs import base\n"
        "import importlib\n"
        "importlib.import_module(f'hdge_tf.configs.{name}')\n"
    )
    fake = tmp_path / "hdge_tf" / "reproduce" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setitem(MODULES, "hdge_tf.reproduce.fake", fake)
    found = imports("hdge_tf.reproduce.fake")
    assert {"hdge_tf.bin.cli", "hdge_tf.configs", "hdge_tf.configs.base"} <= found
    with pytest.raises(AssertionError, match="imports"):
        test_library_module_imports_neither_bin_nor_configs("hdge_tf.reproduce.fake")
