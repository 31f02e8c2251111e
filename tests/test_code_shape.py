"""The shape of the code, checked from its source: one writer of hf_time.json, lineage kinds in one place,
imports that go one way (no circles; the merge methods import nothing above them)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _sources():
    return sorted((ROOT / "hf_time").rglob("*.py"))


_WRITES = ("write_text", "write_bytes", "dump", "write")


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_hf_time_json_is_written_by_one_function_and_kind_literals_live_in_the_lineage():
    writers, kinds = [], set()
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # A literal kind ({"kind": "merge"}) is the lineage's to write; passing a task's own kind along
            # ({"kind": self.kind} in a task spec) is not a lineage kind.
            if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "kind"
                                                  and isinstance(v, ast.Constant) for k, v in zip(node.keys, node.values)):
                kinds.add(rel)
        for fn in _functions(tree):
            code = [st for st in fn.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
            body = "\n".join(ast.unparse(st) for st in code)  # docstrings may name the file
            names_file = "LINEAGE_FILE" in body or "hf_time.json" in body
            writes = any(isinstance(n, ast.Call) and getattr(n.func, "attr", "") in _WRITES for n in ast.walk(fn))
            if names_file and writes:
                writers.append(f"{rel}:{fn.name}")
    assert writers == ["hf_time/lineage.py:save"], writers
    assert kinds <= {"hf_time/lineage.py", "hf_time/lineage_v1.py"}, kinds


def _imports(path: Path, module: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            parts = module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")[: len(module.split(".")) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def test_no_import_circles_and_merges_import_nothing_above_them():
    """Modules import one way (package __init__ files only re-export, so edges into them are not followed)."""
    modules = {}
    for path in _sources():
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    edges = {m: {t for t in _imports(p, m) if t in modules and t != m and t not in packages}
             for m, p in modules.items() if m not in packages}
    upward = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                    if m.startswith("hf_time.merges") and not t.startswith(("hf_time.merges", "hf_time.errors", "hf_time.schema")))
    assert upward == []
    state: dict[str, int] = {}

    def visit(m, trail):  # depth-first search; a grey node met again closes a circle
        state[m] = 1
        for t in edges.get(m, ()):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(t):] + [t]))
            if t not in state:
                visit(t, trail + [t])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])


def test_the_merge_command_imports_only_what_a_merge_needs(tmp_path):
    """`hf-time merge` starts fast: no transformers, datasets, evaluate, matplotlib or peft on its path."""
    import subprocess
    import sys

    code = f"""
import sys, torch
from safetensors.torch import save_file
for name, shift in (("base", 0.0), ("e1", 0.5)):
    import os; os.makedirs({str(tmp_path)!r} + "/" + name)
    save_file({{"w": torch.ones(4, 4) + shift}}, {str(tmp_path)!r} + f"/{{name}}/model.safetensors")
from hf_time.cli import main
assert main(["merge", "--base", {str(tmp_path / "base")!r}, "--expert", {str(tmp_path / "e1")!r}, "--method", "ties",
             "--out", {str(tmp_path / "m")!r}, "--quiet"]) == 0
print("IMPORTED:" + ",".join(m for m in ("transformers", "datasets", "evaluate", "matplotlib", "peft") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    imported = out.stdout.strip().splitlines()[-1].removeprefix("IMPORTED:")
    assert imported == "", f"the merge path imported {imported}"
