"""The package's shape: short functions with few parameters, no import circle, the benchmark
standing on the training core rather than on a copy of it."""
from __future__ import annotations

import ast
from pathlib import Path


from conftest import ROOT

PACKAGE = ROOT / "labelemb"
MAX_FUNCTION_LINES = 80  # where a longer function reads better top to bottom
MAX_PARAMETERS = 7  # self and cls aside: more means state to hold in one object


def _modules(package: Path = PACKAGE) -> dict[str, tuple[ast.Module, bool]]:
    """Module name -> (syntax tree, whether it is a package's __init__)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path)), path.name == "__init__.py"
    return out


def _declaration_lines(fn: ast.FunctionDef) -> int:
    """Lines of argparse declarations in ``fn``: calls of ``add_argument`` or of a local alias of it."""
    aliases = {t.id for node in ast.walk(fn) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Attribute) and node.value.attr == "add_argument"
               for t in node.targets if isinstance(t, ast.Name)}
    lines = 0
    for node in ast.walk(fn):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            f = node.value.func
            if (isinstance(f, ast.Attribute) and f.attr == "add_argument") or (isinstance(f, ast.Name) and f.id in aliases):
                lines += node.end_lineno - node.lineno + 1
    return lines


def test_no_function_over_80_lines():
    long = []
    for name, (tree, _) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1 - _declaration_lines(node)
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


def test_no_function_takes_more_than_7_parameters():
    many = []
    for name, (tree, _) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                n = len(names) - (names[:1] in (["self"], ["cls"])) + bool(a.vararg) + bool(a.kwarg)
                if n > MAX_PARAMETERS:
                    many.append(f"{name}.{node.name}: {n} parameters")
    assert not many, many


def _imports(name: str, tree: ast.Module, is_package: bool) -> set[str]:
    """The labelemb modules ``name`` imports, at its top level or inside functions."""
    package = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.startswith("labelemb")}
    return out


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = _modules(package)
    return {name: {t for t in _imports(name, *mods[name]) if t in mods and t != name} for name in mods}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m]):
            if n.startswith(m + "."):  # a package importing its own submodules is no circle
                continue
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n, path + [n])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_import_circle(tmp_path):
    circle = _circle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)
    # the check sees a circle through an import inside a function (as data <-> imagefolder once had)
    pkg = tmp_path / "labelemb"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    assert _circle(_graph(pkg)) == ["labelemb.a", "labelemb.b", "labelemb.a"]


def test_bench_stands_on_the_training_core():
    graph = _graph()
    deps = graph["labelemb.bench"] | graph["labelemb.bench_feeds"]
    assert "labelemb.cli" not in deps and "labelemb.train" in graph["labelemb.bench"]


def test_every_file_readme_links_to_is_in_the_repository():
    # the figures and reports README shows are regenerated under new names now and then
    import re
    readme = (ROOT / "README.md").read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme)
               if not re.match(r"[a-z]+://|#", t)}
    assert targets, "README links to no file of the repository"
    missing = sorted(t for t in targets if not (ROOT / t).exists())
    assert not missing, f"README links to files that are not there: {missing}"
