"""The layers run one way: network.py and data/ import no project module above them, grlnet/ imports only
those two and itself, and no library module reads the parsed options (only the scripts see argparse)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {path.stem for path in ROOT.glob("*.py")} | {"data", "grlnet", "experiments", "tests"}
# Each library layer and the project modules it may import.
ALLOWED = {"network": {"network"}, "data": {"data"}, "grlnet": {"grlnet", "data", "network"}}


def library_modules() -> list[Path]:
    return [ROOT / "network.py", *sorted((ROOT / "data").glob("*.py")), *sorted((ROOT / "grlnet").glob("*.py"))]


def imported(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_library_module_imports_only_the_layers_below_it(path):
    layer = "network" if path.name == "network.py" else path.parent.name
    above = sorted((imported(path) & PROJECT) - ALLOWED[layer])
    assert not above, f"{path.relative_to(ROOT)} imports {', '.join(above)}, above its layer"


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_library_module_takes_the_options_namespace(path):
    assert "argparse.Namespace" not in path.read_text()


def test_the_check_sees_an_import_from_above(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import torch\n\ndef f():\n    from opts import parse_opts\n    import grlnet.cli\n")
    assert imported(module) & PROJECT == {"opts", "grlnet"}
