"""The package's layering: every import of one course_utils module by another (at the top of a
file, inside a function or under ``TYPE_CHECKING``) goes to a lower layer, so there is no import
cycle, and the layers are the ones ``course_utils/__init__.py`` lists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import course_utils

PACKAGE = Path(course_utils.__file__).parent
#: A line of the package docstring's list of layers: "- layer 3, ``data``: ...".
LISTED = r"^- layer (\d+), ``(\w+)``"


def _modules() -> dict[str, list[Path]]:
    """Each module (a subpackage counts as one) and its files."""
    found = {p.stem: [p] for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "__main__"}}
    for sub in PACKAGE.iterdir():
        if (sub / "__init__.py").is_file():
            found[sub.name] = sorted(sub.glob("*.py"))
    return found


def _imports(files: list[Path], names: set[str]) -> dict[str, int]:
    """The course_utils modules these files import, anywhere in them, with a line of each."""
    imported: dict[str, int] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] == "course_utils":
                    targets = parts[1:2] or [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names
                           if a.name.startswith("course_utils.")]  # fmt: skip
            for target in targets:
                if target in names:
                    imported.setdefault(target, node.lineno)
    return imported


def _layers() -> dict[str, int]:
    """module -> layer number, read from the package docstring ("- layer 3, ``data``: ...")."""
    doc = course_utils.__doc__ or ""
    return {name: int(n) for n, name in re.findall(LISTED, doc, flags=re.M)}


def test_the_docstring_lists_every_module_once():
    doc = course_utils.__doc__ or ""
    listed = [name for _, name in re.findall(LISTED, doc, flags=re.M)]
    assert sorted(listed) == sorted(_modules()), "course_utils/__init__.py lists other modules"
    assert len(listed) == len(set(listed))


def test_every_import_goes_down_the_layers():
    modules, layers = _modules(), _layers()
    wrong = []
    for name, files in modules.items():
        own = _imports(files, set(modules) - {name})
        for target, line in own.items():
            if layers[target] >= layers[name]:
                wrong.append(f"{name} (layer {layers[name]}) imports {target} (layer "
                             f"{layers[target]}), line {line}")  # fmt: skip
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_the_import_graph_has_no_cycle():
    """Independent of the layer numbers: a depth-first search for a cycle."""
    modules = _modules()
    graph = {name: set(_imports(files, set(modules) - {name})) for name, files in modules.items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_checker_sees_function_local_and_type_checking_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from course_utils.training import TrainConfig\n"
        "def f():\n    from course_utils import cli\n    import course_utils.data\n"
    )
    assert set(_imports([source], {"training", "cli", "data"})) == {"training", "cli", "data"}
