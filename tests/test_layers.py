"""Issue 14: layers that hold.

The architecture (ARCHITECTURE.md, "Dependencies and why", Layers) stacks the package as

    cli → api → engine / doctor / report → tasks → data / models / optim / losses / evaluate →
    recipe / registry / errors / atomic / rng / device

and the contract is declared once, in ``[tool.trainlab.layers]`` of pyproject.toml: the layers top to
bottom, each a list of the package's subpackages and top-level modules. These tests read every
module under ``src/`` with :mod:`ast` and fail when

- a module imports a module of a higher layer: at module level, inside a function (a lazy import
  counts: it runs sooner or later) or under ``if TYPE_CHECKING`` (it is still a dependency);
  relative imports are resolved against the importing module's package, and ``from pkg import name``
  counts as importing ``pkg.name`` when that is a module;
- two of the declared packages import each other (data ↔ engine; also inside one layer, where each
  may import the other's layer: doctor ↔ report), or packages of one layer import each other round
  a longer cycle (a → b → c → a; a longer cycle that goes up a layer fails as a layer violation);
- a subpackage or top-level module is in no layer (a new package must be placed), or a declared one
  no longer exists.

Each failure names the importing file:line, the imported module and the two layers. Imports by
computed name (``importlib.import_module``: the registry loading the tables that stages register
into, the CLI loading its commands) are not import statements and are not checked.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
SRC = REPO / "src"
ROOT_UNIT = "__init__"  # the package's own __init__.py in the contract


# --------------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Contract:
    """The declared layers, top (index 0) to bottom."""

    package: str
    layers: tuple[Layer, ...]

    def unit(self, module: str) -> str | None:
        """The declared unit a module belongs to (its subpackage or top-level module, ``__init__``
        for the package itself), or None when the module is outside the package."""
        if module == self.package:
            return ROOT_UNIT
        if module.startswith(self.package + "."):
            return module[len(self.package) + 1:].split(".", 1)[0]
        return None

    def layer_index(self, unit: str) -> int | None:
        for i, layer in enumerate(self.layers):
            if unit in layer.modules:
                return i
        return None

    def describe(self, unit: str) -> str:
        i = self.layer_index(unit)
        return f"layer {i + 1} {self.layers[i].name!r}" if i is not None else "no layer"


def load_contract(pyproject: Path) -> Contract:
    """``[tool.trainlab.layers]`` of ``pyproject``, checked for shape and duplicates."""
    table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    try:
        section = table["tool"]["trainlab"]["layers"]
    except KeyError:
        raise AssertionError(f"{pyproject}: no [tool.trainlab.layers] table declaring the layers") from None
    package, raw = section.get("package"), section.get("layers")
    assert isinstance(package, str) and package, f"{pyproject}: [tool.trainlab.layers] package must be a name"
    assert isinstance(raw, list) and raw, f"{pyproject}: [tool.trainlab.layers] layers must be a non-empty list"
    layers, seen = [], {}
    for i, entry in enumerate(raw, 1):
        shaped = isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("modules"), list)
        assert shaped, f"{pyproject}: layers[{i}] must be {{ name = \"...\", modules = [...] }}, got {entry!r}"
        for m in entry["modules"]:
            assert m not in seen, f"{pyproject}: {m!r} is declared in layer {seen[m]} and again in layer {i}"
            seen[m] = i
        layers.append(Layer(entry["name"], tuple(entry["modules"])))
    return Contract(package, tuple(layers))


# ------------------------------------------------------------------------------------ imports
@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    importer: str  # dotted module name
    imported: str  # dotted module name it resolves to

    def where(self, base: Path) -> str:
        try:
            shown = self.file.relative_to(base)
        except ValueError:
            shown = self.file
        return f"{shown.as_posix()}:{self.line}"


def package_modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Every module of ``package`` under ``src``: dotted name → (file, is a package's __init__)."""
    modules = {}
    for path in sorted((src / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_pkg)
    return modules


def resolve_relative(module: str, is_pkg: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level - 1 > len(base) - 1:
        raise ValueError(f"{module}: relative import beyond the top-level package (level {level})")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_in(path: Path, module: str, is_pkg: bool, known: set[str] | dict) -> list[Import]:
    """Every import statement in ``path`` (anywhere: module level, functions, classes, branches)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, module, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(module, is_pkg, node.level, node.module) if node.level else node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(path, node.lineno, module, sub if alias.name != "*" and sub in known else base))
    return found


def collect_imports(src: Path, package: str) -> tuple[list[Import], set[str]]:
    """Imports from the package into itself, and the units (subpackages / top-level modules) found."""
    modules = package_modules(src, package)
    contract = Contract(package, ())
    imports = []
    for name, (path, is_pkg) in modules.items():
        found = [i for i in imports_in(path, name, is_pkg, modules) if contract.unit(i.imported) is not None]
        imports += list(dict.fromkeys(found))  # `from .x import a, b` is one import of .x
    return imports, {contract.unit(m) for m in modules}


# ------------------------------------------------------------------------------------ checks
def placement_violations(contract: Contract, units: set[str]) -> list[str]:
    problems = [f"{contract.package}.{u}: in no layer; place it in [tool.trainlab.layers] of pyproject.toml"
                if u != ROOT_UNIT else f"{contract.package}/__init__.py: in no layer (declare {ROOT_UNIT!r})"
                for u in sorted(units) if contract.layer_index(u) is None]
    declared = {m for layer in contract.layers for m in layer.modules}
    problems += [f"[tool.trainlab.layers] declares {m!r}, which is no module or package of {contract.package}"
                 for m in sorted(declared - units)]
    return problems


def layer_violations(contract: Contract, imports: list[Import], base: Path) -> list[str]:
    """One line per import of a higher layer's module: file:line, importer, imported, both layers."""
    out = []
    for imp in imports:
        a, b = contract.unit(imp.importer), contract.unit(imp.imported)
        ia, ib = contract.layer_index(a), contract.layer_index(b)
        if ia is not None and ib is not None and ib < ia:
            out.append(f"{imp.where(base)}: {imp.importer} imports {imp.imported}, but {a} is in "
                       f"{contract.describe(a)} and {b} is in {contract.describe(b)} above it")
    return out


def cycle_violations(contract: Contract, imports: list[Import], base: Path) -> list[str]:
    """One line per import cycle between units, each step with the file:line of its first import.

    Every pair of units that import each other is reported (data <-> engine), whatever their layers.
    A longer cycle is looked for among the imports that do not go up a layer, i.e. within one layer:
    one that goes up is already a layer violation, and every cycle through it would repeat it.
    """
    sites: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in imports:
        a, b = contract.unit(imp.importer), contract.unit(imp.imported)
        if a != b:
            sites[(a, b)].append(imp)

    def upward(a: str, b: str) -> bool:
        ia, ib = contract.layer_index(a), contract.layer_index(b)
        return ia is not None and ib is not None and ib < ia

    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in sites:
        if not upward(a, b):
            graph[a].add(b)

    def shortest_path(start: str, goal: str) -> list[str] | None:
        previous, frontier = {start: None}, [start]
        while frontier:
            nxt = []
            for u in frontier:
                for v in sorted(graph[u]):
                    if v == goal:
                        path = [v, u]
                        while previous[path[-1]] is not None:
                            path.append(previous[path[-1]])
                        return path[::-1]
                    if v not in previous:
                        previous[v] = u
                        nxt.append(v)
            frontier = nxt
        return None

    cycles = [[a, b, a] for a, b in sorted(sites) if a < b and (b, a) in sites]
    for a in sorted(graph):
        for b in sorted(graph[a]):
            back = shortest_path(b, a)
            if back is not None and len(back) > 2:
                cycles.append([a] + back)  # a → b → ... → a
    out, seen = [], set()
    for cycle in cycles:
        key = frozenset(zip(cycle, cycle[1:]))
        if key in seen:
            continue
        seen.add(key)
        steps = []
        for u, v in zip(cycle, cycle[1:]):
            first = sites[(u, v)][0]
            more = f" (+{len(sites[(u, v)]) - 1} more)" if len(sites[(u, v)]) > 1 else ""
            steps.append(f"{first.where(base)}: {first.importer} imports {first.imported}{more} "
                         f"[{contract.describe(u)} -> {contract.describe(v)}]")
        arrow = " <-> ".join(cycle[:2]) if len(cycle) == 3 else " -> ".join(cycle)
        out.append(f"import cycle between packages {arrow}: " + "; ".join(steps))
    return out


def check_tree(src: Path, contract: Contract, base: Path) -> dict[str, list[str]]:
    imports, units = collect_imports(src, contract.package)
    return {"placement": placement_violations(contract, units),
            "layers": layer_violations(contract, imports, base),
            "cycles": cycle_violations(contract, imports, base)}


def report(problems: list[str], what: str) -> str:
    return f"{len(problems)} {what} (contract: [tool.trainlab.layers] in pyproject.toml):\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------------ the project's tree
@pytest.fixture(scope="module")
def project():
    contract = load_contract(PYPROJECT)
    return contract, check_tree(SRC, contract, REPO)


def test_layers_are_declared_in_the_architectures_order_and_place_every_package(project):
    """Issue 14: the declared layers follow ARCHITECTURE.md (so a violation is fixed in the code, not
    by moving a package), and every subpackage and top-level module sits in exactly one layer."""
    contract, problems = project
    assert contract.package == "trainlab"
    at = contract.layer_index
    assert at("cli") < at("api") < at("engine") == at("doctor") == at("report") < at("tasks")
    assert at("tasks") < at("data") == at("models") == at("optim") == at("losses") == at("evaluate")
    assert at("evaluate") < at("registry") == at("errors") == at("rng") == at("device") == at("recipe")
    assert at("registry") == len(contract.layers) - 1
    assert at("run") == at("kfold") == at("inputs") == at("export") == at(ROOT_UNIT) == at("api")
    assert not problems["placement"], report(problems["placement"], "undeclared or stale names")


def test_no_module_imports_a_higher_layer(project):
    """Issue 14: nothing below imports from above, lazy imports inside functions included."""
    _, problems = project
    assert not problems["layers"], report(problems["layers"], "imports of a higher layer")


def test_no_import_cycle_between_packages(project):
    """Issue 14: no two packages import each other, not even within one layer."""
    _, problems = project
    assert not problems["cycles"], report(problems["cycles"], "import cycles between packages")


# ------------------------------------------------------------------- the checker catches them
SYNTHETIC_CONTRACT = """
[tool.trainlab.layers]
package = "pkg"
layers = [
    { name = "top", modules = ["__init__", "top"] },
    { name = "middle", modules = ["engine", "report"] },
    { name = "bottom", modules = ["data", "models", "errors"] },
]
"""


def write_tree(root: Path, files: dict[str, str]) -> Path:
    src = root / "src"
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "pyproject.toml").write_text(SYNTHETIC_CONTRACT, encoding="utf-8")
    return src


def test_checker_catches_upward_imports_at_module_level_and_lazily(tmp_path):
    """Issue 14: the checker itself fails on upward imports (absolute, relative, ``from pkg import
    module``, inside a function, under TYPE_CHECKING) and passes downward and same-layer ones."""
    src = write_tree(tmp_path, {
        "pkg/__init__.py": "from . import top\n__version__ = '1'\n",
        "pkg/top.py": "from .engine import loop\nimport pkg.data.loader\n",
        "pkg/errors.py": "class Error(Exception):\n    pass\n",
        "pkg/engine/__init__.py": "",
        "pkg/engine/loop.py": "from ..data.loader import load\nfrom ..report import plots\nfrom ..errors import E\n",
        "pkg/report/__init__.py": "",
        "pkg/report/plots.py": "import os\n",
        "pkg/models/__init__.py": "from ..data import loader\n",
        "pkg/data/__init__.py": "from .loader import load\n",
        "pkg/data/loader.py": (
            "from typing import TYPE_CHECKING\n"
            "from ..errors import Error\n"
            "from ..engine.loop import Callback\n"                 # line 3: module level, relative
            "if TYPE_CHECKING:\n"
            "    from pkg.report import plots\n"                  # line 5: type-checking only
            "def load():\n"
            "    from .. import top\n"                            # line 7: lazy, 'from package import module'
            "    import pkg.engine.loop as loop\n"                # line 8: lazy, absolute
            "    from .. import __version__\n"                    # line 9: the package's own __init__
            "    return loop\n"
        ),
    })
    contract = load_contract(tmp_path / "pyproject.toml")
    problems = check_tree(src, contract, tmp_path)
    assert problems["placement"] == []  # (the upward imports close cycles too, reported apart)
    assert problems["layers"] == [
        "src/pkg/data/loader.py:3: pkg.data.loader imports pkg.engine.loop, but data is in layer 3 'bottom' "
        "and engine is in layer 2 'middle' above it",
        "src/pkg/data/loader.py:5: pkg.data.loader imports pkg.report.plots, but data is in layer 3 'bottom' "
        "and report is in layer 2 'middle' above it",
        "src/pkg/data/loader.py:7: pkg.data.loader imports pkg.top, but data is in layer 3 'bottom' "
        "and top is in layer 1 'top' above it",
        "src/pkg/data/loader.py:8: pkg.data.loader imports pkg.engine.loop, but data is in layer 3 'bottom' "
        "and engine is in layer 2 'middle' above it",
        "src/pkg/data/loader.py:9: pkg.data.loader imports pkg, but data is in layer 3 'bottom' "
        "and __init__ is in layer 1 'top' above it",
    ]


def test_checker_catches_cycles_between_packages(tmp_path):
    """Issue 14: data <-> models (one layer, so each may import the other's layer) is a cycle,
    reported with both import sites; so is a three-package cycle within a layer; and a pair across
    layers (data <-> engine) is reported as a cycle as well as a layer violation."""
    src = write_tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/top.py": "",
        "pkg/errors.py": "",
        "pkg/engine/__init__.py": "def f():\n    from ..report import x\n",
        "pkg/report/__init__.py": "x = 1\n",
        "pkg/data/__init__.py": "from ..models import net\n",
        "pkg/models/__init__.py": "",
        "pkg/models/net.py": "import os\n\ndef build():\n    from pkg.data import stats, stats\n",
        "pkg/data/stats.py": "",
    })
    contract = load_contract(tmp_path / "pyproject.toml")
    problems = check_tree(src, contract, tmp_path)
    assert problems["layers"] == [] and problems["placement"] == []
    assert problems["cycles"] == [
        "import cycle between packages data <-> models: src/pkg/data/__init__.py:1: pkg.data imports pkg.models.net "
        "[layer 3 'bottom' -> layer 3 'bottom']; src/pkg/models/net.py:4: pkg.models.net imports pkg.data.stats "
        "[layer 3 'bottom' -> layer 3 'bottom']",
    ]
    # data → models → errors → data, all in the bottom layer
    (src / "pkg/models/net.py").write_text("from .. import errors\n", encoding="utf-8")
    (src / "pkg/errors.py").write_text("def f():\n    import pkg.data.stats\n", encoding="utf-8")
    problems = check_tree(src, contract, tmp_path)
    assert problems["layers"] == []
    assert problems["cycles"] == [
        "import cycle between packages data -> models -> errors -> data: "
        "src/pkg/data/__init__.py:1: pkg.data imports pkg.models.net [layer 3 'bottom' -> layer 3 'bottom']; "
        "src/pkg/models/net.py:1: pkg.models.net imports pkg.errors [layer 3 'bottom' -> layer 3 'bottom']; "
        "src/pkg/errors.py:2: pkg.errors imports pkg.data.stats [layer 3 'bottom' -> layer 3 'bottom']",
    ]
    # data <-> engine across layers
    (src / "pkg/errors.py").write_text("", encoding="utf-8")
    (src / "pkg/data/stats.py").write_text("from ..engine import f\n", encoding="utf-8")
    (src / "pkg/engine/__init__.py").write_text("from ..data.stats import g\n", encoding="utf-8")
    problems = check_tree(src, contract, tmp_path)
    assert problems["layers"] == [
        "src/pkg/data/stats.py:1: pkg.data.stats imports pkg.engine, but data is in layer 3 'bottom' "
        "and engine is in layer 2 'middle' above it",
    ]
    assert problems["cycles"] == [
        "import cycle between packages data <-> engine: src/pkg/data/stats.py:1: pkg.data.stats imports pkg.engine "
        "[layer 3 'bottom' -> layer 2 'middle']; src/pkg/engine/__init__.py:1: pkg.engine imports pkg.data.stats "
        "[layer 2 'middle' -> layer 3 'bottom']",
    ]


def test_checker_requires_every_package_placed_and_no_stale_names(tmp_path):
    """Issue 14: a new package in no layer fails (it must be placed), as does a declared name that
    no longer exists; a malformed or duplicated declaration fails with the pyproject named."""
    src = write_tree(tmp_path, {"pkg/__init__.py": "", "pkg/top.py": "", "pkg/newthing.py": "",
                                "pkg/engine/__init__.py": "", "pkg/report/__init__.py": "",
                                "pkg/data/__init__.py": "", "pkg/errors.py": ""})
    problems = check_tree(src, load_contract(tmp_path / "pyproject.toml"), tmp_path)
    assert problems["placement"] == [
        "pkg.newthing: in no layer; place it in [tool.trainlab.layers] of pyproject.toml",
        "[tool.trainlab.layers] declares 'models', which is no module or package of pkg",
    ]
    (tmp_path / "pyproject.toml").write_text(SYNTHETIC_CONTRACT.replace('"errors"]', '"errors", "engine"]'))
    with pytest.raises(AssertionError, match="'engine' is declared in layer 2 and again in layer 3"):
        load_contract(tmp_path / "pyproject.toml")


def test_relative_imports_resolve_against_the_importing_modules_package():
    """Issue 14: ``from .x`` in a package's __init__ is a sibling inside that package; in a module
    it is a sibling of the module; each extra dot climbs one package."""
    assert resolve_relative("trainlab.data", True, 1, "loader") == "trainlab.data.loader"
    assert resolve_relative("trainlab.data.preview", False, 1, "loader") == "trainlab.data.loader"
    assert resolve_relative("trainlab.data.preview", False, 2, "engine.callbacks") == "trainlab.engine.callbacks"
    assert resolve_relative("trainlab.engine.checkpoint", False, 2, None) == "trainlab"
    with pytest.raises(ValueError, match="beyond the top-level package"):
        resolve_relative("trainlab.data", False, 3, None)
