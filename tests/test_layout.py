"""The package layout of DESIGN.md ("The pieces and who owns what"), checked from the source.

Floors: a module imports from its own floor or the floors above it, never from a floor below.
No import cycles between modules. No module imports another module's private names or reads
another module's objects' private attributes.
"""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "roboloop"

# Top to bottom: a module may import from its own floor and every floor listed before it.
# `config` sits with `workspace`: `Config.save` writes through the workspace's atomic writes.
# `plugins` (import by path) sits there too: signals, policies and tasks all load through it.
FLOORS: list[set[str]] = [
    {"schema", "errors"},
    {"config", "workspace", "rows", "faults", "plugins"},
    {"video", "predicate"},
    {"stats"},
    {"catalog"},
    {"record"},
    {"envs"},
    {"collect"},
    {"refine"},
    {"curate"},
    {"stream"},
    {"train"},
    {"evaluate"},
    {"analyze"},
    {"interop"},
    {"report"},
    {"demo"},
    {"cli"},
]
FLOOR_OF = {piece: level for level, pieces in enumerate(FLOORS) for piece in pieces}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def piece(module: str) -> str | None:
    """The top-level piece of `roboloop.x.y` (`x`), None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, *, top_level_only: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every roboloop import in `module`."""
    tree = TREES[module]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("roboloop")]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            if target == "roboloop" or target.startswith("roboloop."):
                names = [a.name for a in node.names]
                # `from roboloop.x import y` where y is a submodule imports roboloop.x.y
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
                found.append((target, names, node.lineno))
                found += [(s, [], node.lineno) for s in subs]
    return found


def test_every_piece_has_a_floor():
    pieces = {piece(m) for m in MODULES} - {None, "__main__"}
    assert pieces <= set(FLOOR_OF), sorted(pieces - set(FLOOR_OF))


def test_no_module_imports_from_a_floor_below():
    violations = []
    for module in MODULES:
        own = piece(module)
        if own is None or own == "__main__":
            continue
        for target, _names, line in imports(module, top_level_only=False):
            other = piece(target)
            if other is None or other == own:
                continue
            if FLOOR_OF[other] > FLOOR_OF[own]:
                violations.append(f"{module}:{line} imports {target} ({other} is below {own})")
    assert not violations, "\n".join(violations)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _names, _line in imports(module, top_level_only=True):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _package_of(module: str) -> str:
    is_package = MODULES[module].name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


def test_no_import_cycles():
    """No cycle between modules through module-level imports (a package's `__init__` re-exporting
    its own modules is not an edge back from them)."""
    graph = _graph()
    for module, targets in graph.items():
        # importing a submodule runs its parents' __init__; re-exports there are not cycles
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def test_no_private_names_across_modules():
    violations = []
    for module in MODULES:
        for target, names, line in imports(module, top_level_only=False):
            if target == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                violations.append(f"{module}:{line} imports {private} from {target}")
    assert not violations, "\n".join(violations)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_attributes_defined(tree: ast.Module) -> set[str]:
    """Private attribute names a module gives its objects: `self._x = ...`, and methods and class
    attributes called `_x`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(item.name):
                    names.add(item.name)
                targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                names |= {t.id for t in targets if isinstance(t, ast.Name) and _private(t.id)}
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            names.add(node.attr)
    return names


DEFINED = {module: _private_attributes_defined(tree) for module, tree in TREES.items()}


def _private_attribute_reads(tree: ast.Module) -> list[tuple[str, str, int]]:
    """(expression, attribute, line) for every `obj._x` where obj is not `self`, `cls` or `super()`."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append((f"{ast.unparse(owner)}.{node.attr}", node.attr, node.lineno))
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_attributes_of_other_modules(module):
    """A private attribute that another roboloop module defines is that module's business: reading
    it from here couples the two (a module reading its own classes' privates is fine)."""
    others = set().union(*(names for m, names in DEFINED.items() if m != module))
    reads = [
        f"{module}:{line} reads {expr}"
        for expr, attr, line in _private_attribute_reads(TREES[module])
        if attr in others and attr not in DEFINED[module]
    ]
    assert not reads, "\n".join(reads)


# --- the README's code map names every module ---------------------------------------------------------------

README = SRC.parent / "README.md"


def _code_map() -> dict[str, str]:
    """The README's "Code map" section, one paragraph per piece: each piece its bold title names (`collect/`,
    `schema.py`, ...) -> that paragraph's text."""
    text = README.read_text()
    section = text.split("\n## Code map\n", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for para in section.split("\n\n"):
        if para.startswith("**`"):
            title = para[2:para.index("**", 2)]
            for name in re.findall(r"`([\w/.]+)`", title):
                out[name.removesuffix(".py").strip("/")] = para
    return out


def _names(text: str, module: str) -> bool:
    """Whether `text` names `module` in backticks: `module`, `module.py`, or with its package in front (`pkg/module.py`,
    `pkg.module`)."""
    return re.search(rf"`(?:[\w/.]+[/.])?{re.escape(module)}(?:\.py)?`", text) is not None


def _unmapped() -> list[str]:
    """Modules under src/roboloop the code map does not name in their piece's paragraph (a module of a sub-package,
    e.g. envs/aloha/sloppy.py, after the sub-package is named and before the next one)."""
    paragraphs, missing = _code_map(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py":  # a package's docstring says what it holds
            continue
        piece, stem = rel.parts[0].removesuffix(".py"), rel.stem
        text = paragraphs.get(piece, "")
        if len(rel.parts) == 3:  # pkg/sub/module.py: the part of the paragraph about `pkg/sub/`
            sub = f"`{rel.parts[0]}/{rel.parts[1]}/`"
            text = text[text.index(sub):] if sub in text else ""
            text = re.split(rf"`{rel.parts[0]}/(?!{rel.parts[1]}/)\w+/`", text, maxsplit=1)[0]
        if not (len(rel.parts) == 1 and text) and not _names(text, stem):
            missing.append(str(rel))
    return missing


def test_the_readme_code_map_names_every_module():
    assert _unmapped() == []
