"""The package's shape (docs/README's architecture picture), checked on the source with ``ast``.

* no import cycle between kanotify's modules (an import inside a function counts too:
  a lazy import dodges the cost, not the dependency);
* a subpackage's ``__init__.py`` imports nothing (the STOP and hand-over paths import a few
  modules before they fork: a re-exporting ``__init__`` would drag the heavy ones in);
* no module over :data:`MAX_LINES` lines;
* every ``cmd_*`` function lives in the entry layer (:data:`ENTRY_LAYER`);
* every ``kanotify/...py`` path and ``kanotify.x.y`` module the docs name exists.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kanotify"
REPO = PACKAGE.parent
MAX_LINES = 900
ENTRY_LAYER = {"kanotify.__main__", "kanotify.cli", "kanotify.commands"}
CMD_ALLOWED_ELSEWHERE: set[tuple[str, str]] = set()
TOO_LONG_ALLOWED: set[str] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The kanotify modules ``name`` imports (a ``from PKG import mod`` names the module itself)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known:
                found.add(target)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    # a package's modules import its (empty) __init__ implicitly; that is no edge of the design
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or ())


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_subpackage_init_files_import_nothing() -> None:
    for name, path in modules().items():
        if path.name != "__init__.py" or name == "kanotify":
            continue
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], name


def test_no_module_is_over_the_limit() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in TOO_LONG_ALLOWED
    }
    assert not long, long


def test_commands_live_in_the_entry_layer() -> None:
    stray = set()
    for name, path in modules().items():
        if name in ENTRY_LAYER:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_"):
                stray.add((name, node.name))
    assert stray <= CMD_ALLOWED_ELSEWHERE, sorted(stray - CMD_ALLOWED_ELSEWHERE)


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_modules_named_in_the_docs_exist() -> None:
    known = modules()
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for path in re.findall(r"\bkanotify/[\w/]+\.py\b", text):
            if not (REPO / path).exists():
                missing.append(f"{doc.name}: {path}")
        for dotted in re.findall(r"(?<![\w/.-])kanotify(?:\.[a-z_]+)+", text):
            if dotted.endswith((".toml", ".conf", ".fifo", ".service", ".timer", ".sock", ".jsonl", ".py", ".prom")):
                continue
            if not any(dotted == m or dotted.startswith(m + ".") for m in known if m != "kanotify"):
                missing.append(f"{doc.name}: {dotted}")
    assert not missing, missing
