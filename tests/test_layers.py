"""The package's layers (README, Layout): every import of umtune points down, never up."""

import ast
from pathlib import Path

import umtune

ROOT = Path(umtune.__file__).parent
LEAVES = {"config", "layout", "storage", "strict_yaml"}
# What each part may import besides itself and the leaves.
BELOW = {
    "data": set(),
    "trainable": {"data"},
    "search_spaces": set(),
    "analysis": {"trainable", "data"},
    "cluster": set(),
    "sweep": {"search_spaces", "analysis", "trainable", "data"},
    "cli": {"sweep", "search_spaces", "analysis", "trainable", "data", "cluster"},
}


def _imports(file: Path) -> set[str]:
    """The umtune parts a module imports: `umtune.X...` -> X."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and
                 node.level == 0 else [a.name for a in node.names]
                 if isinstance(node, ast.Import) else [])
        found |= {n.split(".")[1] for n in names if n.startswith("umtune.")}
    return found


def _part(file: Path) -> str:
    return file.relative_to(ROOT).parts[0].removesuffix(".py")


def test_every_import_points_down_the_layers():
    wrong = []
    for file in sorted(ROOT.rglob("*.py")):
        part = _part(file)
        if part == "__init__":
            continue
        allowed = LEAVES | {part} | BELOW.get(part, set()) if part not in LEAVES else LEAVES
        wrong += [f"{file.relative_to(ROOT)} imports umtune.{name}"
                  for name in sorted(_imports(file) - allowed)]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The trainer importing the sweep side, as it once did, is caught."""
    module = tmp_path / "ray_train.py"
    module.write_text("def trial():\n    from umtune.search_spaces import trial_config\n"
                      "    from umtune.analysis.evaluate import evaluate_checkpoint\n")
    assert _imports(module) - (LEAVES | {"trainable"} | BELOW["trainable"]) == {
        "search_spaces", "analysis"}
