"""No import circle among suite's modules: every import a module runs when it is imported (type-only
imports under `if TYPE_CHECKING:` aside) points one way, so no module works by import order."""
import ast
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "suite"


def module_name(path: Path) -> str:
    parts = path.relative_to(SUITE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The suite modules a file imports at run time (a package's import runs its __init__ first)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            parts = t.split(".")
            found |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)} & modules
    return found - {name} - {p for p in found if name.startswith(p + ".")}  # a module does not "import" its own packages


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, or None (depth-first search, grey = on the current path)."""
    state, path = {}, []

    def visit(m):
        state[m] = "grey"
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "grey":
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = "black"
        path.pop()
        return None
    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_among_suites_modules():
    files = sorted(SUITE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports(p, modules) for p in files}
    assert graph["suite.config"] >= {"suite.registry", "suite.params"}  # the scan sees relative imports
    assert cycle(graph) is None, " -> ".join(cycle(graph))
