"""Issue 14: docs/contributing.md's layout section matches the tree: every module of the package
is named there, and every file it names exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "trainlab"


def _layout() -> str:
    text = (ROOT / "docs" / "contributing.md").read_text()
    return text[text.index("## Layout"): text.index("\n## ", text.index("## Layout") + 3)]


def test_every_module_is_in_the_layout():
    layout = _layout()
    missing = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.name == "__init__.py" and rel.parent != Path("."):
            continue  # a package's __init__ is named by its folder
        if rel.parent.name == "cli" and rel.name != "__init__.py":
            continue  # one module per subcommand, described as such
        if not re.search(rf"(?<![\w.]){re.escape(rel.name)}", layout):
            missing.append(str(rel))
    assert not missing, f"docs/contributing.md does not name: {missing}"


def test_every_named_module_exists():
    layout = _layout()
    tree_part = layout[layout.index("src/trainlab/"):]
    named = set(re.findall(r"(?<![\w./`])([a-z_]+\.py)\b", tree_part))
    existing = {p.name for p in PKG.rglob("*.py")}
    assert named <= existing, f"named but absent: {sorted(named - existing)}"
