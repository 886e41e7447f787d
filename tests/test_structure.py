"""The package's shape: no import cycles between xattn modules, and no function, method or exported cell over 60 lines.
Read with `ast` from the generated `xattn/*.py` (and the notebooks for cells), so the checks see what users import."""
import ast, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "xattn"
MAX_LINES = 60


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PKG.glob("*.py")) if p.stem not in ("__init__", "_modidx")}


def import_graph() -> dict[str, set[str]]:
    "module -> the xattn modules it imports anywhere in its body (top level or inside functions)."
    mods = _modules(); graph = {m: set() for m in mods}
    for m, tree in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module: graph[m].add(node.module.split(".")[0])
                elif node.module and node.module.startswith("xattn."): graph[m].add(node.module.split(".")[1])
                elif node.module == "xattn": graph[m].update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name.split(".")[1] for a in node.names if a.name.startswith("xattn."))
        graph[m] &= set(mods); graph[m].discard(m)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    "One import cycle as a list of modules (first == last), or None."
    state, stack = {}, []
    def visit(n):
        state[n] = 1; stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1: return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)): return c
        state[n] = 2; stack.pop(); return None
    for n in sorted(graph):
        if n not in state and (c := visit(n)): return c
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    assert {"weights", "flow", "extractors"} <= set(graph)
    assert "extractors" not in graph["flow"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def long_functions() -> list[str]:
    out = []
    for m, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES: out.append(f"xattn/{m}.py:{node.lineno} {node.name}: {n} lines")
    return out


def long_exported_cells() -> list[str]:
    out = []
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        for i, c in enumerate(json.loads(nb.read_text())["cells"]):
            src = "".join(c["source"])
            if c["cell_type"] == "code" and src.lstrip().startswith("#| export"):
                n = len(src.strip().splitlines())
                if n > MAX_LINES: out.append(f"{nb.name} cell {i}: {n} lines ({src.splitlines()[1][:60]})")
    return out


def test_no_function_over_60_lines():
    assert long_functions() == []


def test_no_exported_cell_over_60_lines():
    assert long_exported_cells() == []
