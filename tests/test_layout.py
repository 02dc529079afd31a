"""The package's layout, checked on its source: what may import what, and the size budgets.

Every `import x` / `from x import y` of every module under cloudcli/ counts, wherever it is (inside
functions too): a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cloudcli"
MODULE_LINES, FUNCTION_LINES = 300, 50  # budgets; a function over it says why in its docstring ("long: ...")


def _is(target: str, name: str) -> bool:
    """Whether the dotted `target` is the module `name` or inside it."""
    return target == name or target.startswith(name + ".")


# rule -> (whether `module` may not import `target`, what the rule says)
RULES: dict[str, tuple[Callable[[str, str], bool], str]] = {
    "stages": (
        lambda module, target: module.startswith("cloudcli.stages.") and _is(target, "cloudcli.stages"),
        "a stage imports no other stage (nor the cloudcli.stages package): stages talk through files",
    ),
    "typer": (
        lambda module, target: _is(target, "typer") and not _is(module, "cloudcli.cli"),
        "Typer only in the cloudcli.cli package",
    ),
    "yaml": (
        lambda module, target: _is(target, "yaml") and not _is(module, "cloudcli.config"),
        "YAML only in the config module",
    ),
    "rich": (
        lambda module, target: _is(target, "rich") and module != "cloudcli.ui",
        "Rich only in cloudcli/ui.py",
    ),
}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package by its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of everything `source` imports, at any depth: `import a.b` gives a.b,
    `from a import b` gives a.b (b a module or a name in a), relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..a import b
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted(found)


def test_imports_are_found_at_any_depth_and_resolved() -> None:
    source = (
        "import os.path\n"
        "from cloudcli.stages import cv\n"
        "def f():\n"
        "    if True:\n"
        "        from rich.table import Table\n"
        "class A:\n"
        "    def g(self):\n"
        "        import yaml\n"
        "from . import fold\n"
        "from ..post.rules import ClassRule\n"
    )
    assert imports(source, "cloudcli.stages.tune") == [
        (1, "os.path"),
        (2, "cloudcli.stages.cv"),
        (5, "rich.table.Table"),
        (8, "yaml"),
        (9, "cloudcli.stages.fold"),
        (10, "cloudcli.post.rules.ClassRule"),
    ]
    assert imports("from . import tune\n", "cloudcli.stages", is_package=True) == [(1, "cloudcli.stages.tune")]
    stage_rule = RULES["stages"][0]
    assert stage_rule("cloudcli.stages.tune", "cloudcli.stages")  # the package alone is a stage import too
    assert stage_rule("cloudcli.stages.tune", "cloudcli.stages.cv.model_score")
    assert not stage_rule("cloudcli.cli", "cloudcli.stages.cv") and not stage_rule(
        "cloudcli.stages.tune", "cloudcli.post"
    )
    assert not RULES["yaml"][0]("cloudcli.config.load", "yaml") and RULES["yaml"][0]("cloudcli.configs", "yaml")
    typer_rule = RULES["typer"][0]
    assert not typer_rule("cloudcli.cli", "typer") and not typer_rule("cloudcli.cli.pipeline", "typer.Option")
    assert typer_rule("cloudcli.client", "typer") and typer_rule("cloudcli.stages.tune", "typer")


@pytest.mark.parametrize("rule", sorted(RULES))
def test_imports_follow_the_layout(rule: str) -> None:
    forbidden, says = RULES[rule]
    broken = []
    for module, path in modules().items():
        for line, target in imports(path.read_text(), module, path.name == "__init__.py"):
            if forbidden(module, target):
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module} imports {target}")
    assert not broken, f"{says}:\n" + "\n".join(broken)


def test_modules_and_functions_keep_their_budgets() -> None:
    """Modules under ~300 lines, functions under ~50 unless their docstring says why ("long ...")."""
    over = []
    for path in modules().values():
        text = path.read_text()
        name = path.relative_to(PACKAGE.parent)
        if len(text.splitlines()) > MODULE_LINES:
            over.append(f"{name}: {len(text.splitlines())} lines (budget {MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                explained = re.search(r"\blong\b", ast.get_docstring(node) or "", re.IGNORECASE)
                if length > FUNCTION_LINES and not explained:
                    over.append(f"{name}:{node.lineno} {node.name}(): {length} lines (budget {FUNCTION_LINES})")
    assert not over, f"{len(over)} over budget:\n" + "\n".join(over)
