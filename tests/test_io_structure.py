"""pipeline.io's shape: no import cycle, no adapter imported by the package itself, unique recording ids."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from pipeline.io.discover import discover

ROOT = Path(__file__).resolve().parents[1]
IO = ROOT / "pipeline" / "io"


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _io_imports(path: Path, modules: set[str]) -> set[str]:
    """pipeline.io modules that `path` imports explicitly, function-local imports included:
    `from A import b` is an edge to A.b when that is a module, else to A."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            for a in node.names:
                out.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_of(p): p for p in IO.rglob("*.py")}
    return {m: _io_imports(p, set(files)) - {m} for m, p in files.items()}


def test_io_import_graph_has_no_cycle():
    graph = _graph()
    assert "pipeline.io.readers" in graph and graph["pipeline.io.adapters.tuab"]  # the parse sees the package
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " → ".join(path[path.index(n):] + [n]) if n in path else n
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_private_name_crosses_a_module_boundary():
    """No module of the project imports an underscore name (or module) of pipeline.io."""
    bad = []
    files = [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline.io"):
                names = [node.module.rsplit(".", 1)[-1], *(a.name for a in node.names)]
                bad += [f"{path.relative_to(ROOT)}: {node.module}.{n}" for n in names if n.startswith("_")]
    assert not bad, bad


def test_importing_pipeline_io_or_a_reader_imports_no_adapter():
    code = ("import sys, pipeline.io, pipeline.io.readers, pipeline.io.discover;"
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.io.adapters')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_edf_module_reads_edf_only():
    """io/edf.py imports no adapter and no other format's reader; `.mat` and `.gdf` readers are the adapters'."""
    assert _graph()["pipeline.io.edf"] <= {"pipeline.io.edf_records", "pipeline.io.mne_reader",
                                           "pipeline.io.recording", "pipeline.io.registry"}
    import pipeline.io.adapters.bciciv2a as bciciv2a
    import pipeline.io.adapters.shu_mi as shu_mi
    import pipeline.io.edf as edf
    from pipeline.io.registry import READERS

    assert READERS[".edf"] is READERS[".bdf"] is edf.open_edf
    assert READERS[".mat"] is shu_mi.read_shu_mat and READERS[".gdf"] is bciciv2a.open_gdf


def test_recording_ids_unique_across_suffixes(tmp_path: Path):
    (tmp_path / "rec.edf").touch()
    (tmp_path / "rec.bdf").touch()
    ids = [f.recording for f in discover(tmp_path)]
    assert len(set(ids)) == 2 and all(i.startswith("rec-") for i in ids)
    assert ids == [f.recording for f in discover(tmp_path)]  # stable


def test_recording_ids_unique_when_a_folder_looks_like_a_name(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.edf").touch()
    (tmp_path / "a__b.edf").touch()
    (tmp_path / "other.edf").touch()
    by_path = {f.path.relative_to(tmp_path).as_posix(): f.recording for f in discover(tmp_path)}
    assert by_path["other.edf"] == "other"  # ids that do not collide are unchanged
    assert by_path["a/b.edf"] != by_path["a__b.edf"]
    assert by_path["a/b.edf"].startswith("a__b-") and by_path["a__b.edf"].startswith("a__b-")
