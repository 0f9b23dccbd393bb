"""The package's layout: modules import down the layers (no import cycle), no module reaches into another's
private names, none grows past ~600 lines, files are replaced durably in one place, every recipe is a short
command with a Usage docstring, and commands print no third-party warning a user cannot act on."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "focus_nemo"
MAX_LINES = 600  # non-blank lines per module
MAX_RECIPE_LINES = 60
DURABLE = PACKAGE / "durable.py"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.AST, name: str, is_package: bool, modules: dict) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every focus_nemo import in `tree`, at any depth (lazy imports too)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "focus_nemo"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "focus_nemo":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None) if sub in modules else (target, a.name))
    return out


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for target, _ in imported(ast.parse(path.read_text()), name, path.name == "__init__.py", modules):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_focus_nemo_modules():
    assert cycles(import_graph()) == []


def test_no_private_name_is_imported_across_modules():
    """Neither the package nor its tests, recipes and benchmarks import (or reach through a module for) a
    name another focus_nemo module keeps private (``_name``)."""
    modules = package_modules()
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py")) + \
        sorted((ROOT / "recipes").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    bad = []
    for path in files:
        tree = ast.parse(path.read_text())
        name = module_name(path) if path.is_relative_to(PACKAGE) else path.stem
        for target, imported_name in imported(tree, name, path.name == "__init__.py", modules):
            if imported_name and imported_name.startswith("_") and not imported_name.startswith("__"):
                bad.append(f"{path.relative_to(ROOT)}: {target}.{imported_name}")
        aliases = {a.asname or a.name: a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for a in node.names if a.name.split(".")[0] == "focus_nemo"}
        aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("focus_nemo")
                    for a in node.names if f"{node.module}.{a.name}" in modules}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    assert bad == []


def test_no_module_is_over_600_lines():
    sizes = {name: sum(1 for line in path.read_text().splitlines() if line.strip())
             for name, path in package_modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_files_are_replaced_in_one_place():
    """Renames over a target, fsync and temporary files belong to focus_nemo.durable alone."""
    calls = {("os", "replace"), ("os", "rename"), ("os", "fsync"), ("tempfile", "mkstemp"),
             ("tempfile", "NamedTemporaryFile")}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == DURABLE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and (node.value.id, node.attr) in calls:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert found == []


def recipes() -> list[Path]:
    return sorted((ROOT / "recipes").glob("*.py"))


@pytest.mark.parametrize("recipe", recipes(), ids=lambda p: p.name)
def test_recipe_is_short_and_documented(recipe):
    doc = ast.get_docstring(ast.parse(recipe.read_text())) or ""
    assert "\nUsage:\n" in doc
    assert len(recipe.read_text().splitlines()) <= MAX_RECIPE_LINES


def run_quietly(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("recipe", recipes(), ids=lambda p: p.name)
def test_recipe_help_prints_no_warning(recipe):
    done = run_quietly(str(recipe), "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage:" in done.stdout or "powered by Hydra" in done.stdout
    assert "Warning" not in done.stderr, done.stderr[-2000:]


def test_a_command_prints_no_warning(tmp_path):
    fasta = tmp_path / "x.fa"
    fasta.write_text(">r1\nACGTACGTTTGACCAGTACGATCGATCGATGCATGCATGCAGTCAGTCGATCGATGCTAGCTAGC\n")
    done = run_quietly("recipes/score_fasta.py", "--fasta", str(fasta), "--checkpoint", "random:tiny", "--adapter",
                       "none", "--k", "4", "--window", "16", "--out", str(tmp_path / "s"), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    assert "1 record(s) scored" in done.stdout


@pytest.mark.nemo
def test_a_nemo_command_prints_no_warning_a_user_cannot_act_on(tmp_path):
    """Converting to NeMo 2 runs NeMo's trainer and Megatron: none of their notices about absent optional
    pieces (Transformer Engine, deploy/evaluate modules, telemetry) reaches the user."""
    from conftest import require_nemo, stressed_model

    from focus_nemo.evo2.checkpoint import save_evo2

    require_nemo()
    save_evo2(stressed_model(pattern="SDH*"), tmp_path / "ours")
    done = run_quietly("recipes/convert_checkpoint.py", "--input", str(tmp_path / "ours"), "--output",
                       str(tmp_path / "nemo2"), "--format", "nemo2")
    assert done.returncode == 0, done.stderr[-3000:]
    noise = [line for line in done.stderr.splitlines() if "Warning" in line or "WARNING" in line or "NeMo W" in line]
    assert noise == [], "\n".join(noise)
