"""The package's shape as checked rules: the import-linter contracts, no import cycles, a docstring per module,
files of a readable size (docs/architecture.md describes the layers)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "src" / "segsweep"
SCRIPTS = REPO_ROOT / "scripts"
MAX_LINES = 300
# Files over MAX_LINES waiting to be split (issue 11), with their length when this list was written: they may
# shrink, not grow. Delete an entry once its file is under the limit.
OVER_LIMIT = {"data/scenes.py": 353}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node, or with a self-import (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        found.append(sorted(component))
    return found


def test_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_import_linter_contracts_are_kept():
    """The layers, entry-point independence and acyclic-siblings contracts of pyproject.toml, as `make lint` runs them."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_no_import_cycles_between_segsweep_modules():
    graph = grimp.build_graph("segsweep", cache_dir=None)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    assert cycles(imports) == []


def script_imports() -> dict[str, set[str]]:
    """For every scripts/*.py, the other scripts it imports (at any depth of its code)."""
    names = {path.stem for path in SCRIPTS.glob("*.py")}
    imports: dict[str, set[str]] = {}
    for path in SCRIPTS.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        imports[path.stem] = imported & names
    return imports


def test_scripts_import_only_benchlib_and_no_cycles():
    imports = script_imports()
    assert cycles(imports) == []
    assert imports["benchlib"] == set()
    for name, imported in imports.items():
        assert imported <= {"benchlib"}, f"scripts/{name}.py imports {sorted(imported)}: scripts share code through benchlib.py"


def test_no_sys_path_changes_in_scripts_or_tests():
    """Scripts find benchlib beside them; tests and the runner load scripts by path (scripts/bench.py:load)."""

    def changes_sys_path(node: ast.AST) -> bool:  # sys.path.insert(...), .append, .extend, sys.path[:0] = ...
        target = node.value if isinstance(node, ast.Attribute) and node.attr in {"insert", "append", "extend"} else None
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t.value if isinstance(t, ast.Subscript) else t for t in targets), None)
        return isinstance(target, ast.Attribute) and target.attr == "path" and getattr(target.value, "id", None) == "sys"

    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in [*SCRIPTS.glob("*.py"), *(REPO_ROOT / "tests").glob("*.py")]
        if any(changes_sys_path(node) for node in ast.walk(ast.parse(path.read_text(), str(path))))
    ]
    assert offenders == []


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_starts_with_a_one_line_summary():
    """A docstring whose first line says what the module is for, on its own (a blank line or nothing after it)."""
    missing, wrapped = [], []
    for path in package_files():
        docstring = ast.get_docstring(ast.parse(path.read_text(), str(path)))
        name = str(path.relative_to(PACKAGE))
        if not docstring or not docstring.splitlines()[0].strip():
            missing.append(name)
        elif len(docstring.splitlines()) > 1 and docstring.splitlines()[1].strip():
            wrapped.append(name)
    assert missing == [], f"modules without a docstring: {missing}"
    assert wrapped == [], f"modules whose summary line runs on into a second line: {wrapped}"


def test_no_module_is_over_the_line_limit():
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in package_files()}
    over = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in OVER_LIMIT}
    assert over == {}, f"over {MAX_LINES} lines (split by concern): {over}"
    grown = {name: (lengths[name], limit) for name, limit in OVER_LIMIT.items() if lengths.get(name, 0) > limit}
    assert grown == {}, f"files waiting to be split grew (now, allowed): {grown}"
    done = [name for name in OVER_LIMIT if lengths.get(name, 0) <= MAX_LINES]
    assert done == [], f"under {MAX_LINES} lines now: delete them from OVER_LIMIT: {done}"


def documented_modules() -> set[str]:
    """The files of the module tree in docs/architecture.md (indentation: two spaces a level), relative to the package."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Modules", 1)[1].split("```")[1]
    listed, folders = set(), []
    for row in block.splitlines()[1:]:
        if not row.strip():
            continue
        level = (len(row) - len(row.lstrip())) // 2
        name = row.split()[0]
        if level == 0:  # src/segsweep/
            continue
        folders = folders[: level - 1]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            listed.add("/".join([*folders, name]))
    return listed


def test_docs_list_every_module():
    modules = {str(path.relative_to(PACKAGE)) for path in package_files() if path.name != "__init__.py"}
    listed = documented_modules() - {"__init__.py"}
    missing, stale = sorted(modules - listed), sorted(listed - modules)
    assert missing == [], f"modules missing from docs/architecture.md (one line each): {missing}"
    assert stale == [], f"docs/architecture.md lists modules that do not exist: {stale}"
