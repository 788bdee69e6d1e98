"""benchmarks/gpu_check.py --smoke (the GPU check's CPU mode, so it never rots) and benchmarks/gpu_hours.py on its JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# not on the device machine (it has torch, accelerate, einops, safetensors, numpy, pyyaml): importing any of them,
# even through a pipeline module, must fail the check
FORBIDDEN = ("zarr", "polars", "mne", "numcodecs", "pyarrow", "pandas", "scipy", "matplotlib", "snakemake")

WRAPPER = """
import atexit, json, runpy, sys
modules_file, script, out = sys.argv[1:4]
for name in {forbidden!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
atexit.register(lambda: open(modules_file, "w").write(json.dumps(sorted(
    {{m.split(".")[0] for m, mod in list(sys.modules.items()) if mod is not None}}))))
sys.argv = [script, "--smoke", "--out", out]
runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    modules = out / "modules.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", WRAPPER.format(forbidden=FORBIDDEN), str(modules), str(SCRIPT),
                           str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else None
    loaded = json.loads(modules.read_text()) if modules.is_file() else None
    return proc, report, loaded, out


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_smoke_mode_runs_every_section_without_error(smoke):
    proc, report, _, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(SCRIPT.parent))
    from gpu_check import SECTIONS

    assert list(report["sections"]) == list(SECTIONS)
    for name, s in report["sections"].items():
        assert s["status"] == "ok", f"{name}: {s.get('error')}\n{s.get('traceback', '')}"


def test_smoke_sections_hold_numbers(smoke):
    _, report, _, _ = smoke
    s = report["sections"]
    assert s["environment"]["torch"] and s["environment"]["date_utc"] and s["environment"]["command"]
    for kind in ("tokenizer", "pretrain"):
        for precision in ("bf16", "fp32"):
            r = s[f"{kind}_{precision}"]
            for key in ("patches_per_s", "step_s_median", "tflops_per_s", "mfu_vs_bf16_peak",
                        "flops_per_step_counted", "parameters"):
                assert _positive(r[key]), (kind, precision, key, r[key])
            assert _positive(r["flops_per_step_formula"]["total"])
            assert all(_positive(v) for v in r["peak_memory"].values())
            assert 0.5 < r["counted_over_formula"] < 1.5  # the stated formula and the counter describe one step
            sdpa = s["sdpa"][f"{kind}_{precision}"]
            assert sum(sdpa["dispatched"].values()) == sdpa["sdpa_calls_per_step"] > 0  # every call was seen
            assert any(t["works"] and _positive(t["forward_backward_ms"])
                       for sig in sdpa["signatures"].values() for t in sig.values())
        agree = s["agreement"][kind]
        assert math.isfinite(agree["loss_rel_diff"]) and agree["loss_rel_diff"] < 0.05
        assert 0.99 < agree["grad_cosine_all"] <= 1.0 + 1e-9
        assert not agree["groups_without_gradient"]
        fit = s["fit"][kind]
        assert fit["resumed_ok"], fit
        assert fit["equal_to_uninterrupted"], fit  # on the CPU a resumed run is bit-identical
        assert fit["ddp"]["world_size"] == 1 and fit["ddp"]["process_group"] == "gloo"
    assert _positive(s["extract_codes"]["windows_per_s"]) and _positive(s["extract_codes"]["windows_per_s_model_only"])
    assert report["elapsed_s"] < 60


def test_import_closure_has_no_data_stack(smoke):
    proc, _, loaded, _ = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]  # it ran with those imports made to fail
    assert loaded and "torch" in loaded and "pipeline" in loaded
    assert not set(FORBIDDEN) & set(loaded)


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    def broken(opts, budget, device):
        raise RuntimeError("no such kernel")

    real = gpu_check.section_functions
    monkeypatch.setattr(gpu_check, "section_functions", lambda: {**real(), "sdpa": broken})
    opts = gpu_check.parse_args(["--smoke", "--out", str(tmp_path), "--sections", "environment", "sdpa"])
    assert gpu_check.main(["--smoke", "--out", str(tmp_path), "--sections", "environment", "sdpa"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert opts.sections == ("environment", "sdpa")
    assert report["sections"]["environment"]["status"] == "ok"
    assert report["sections"]["sdpa"]["status"] == "error"
    assert "no such kernel" in report["sections"]["sdpa"]["error"]


def test_gpu_hours_on_the_smoke_json(smoke, tmp_path):
    _, _, _, out = smoke
    from pipeline.config import load_config

    cfg = load_config(ROOT / "config" / "config.yaml")
    downstream = [n for n, d in cfg.datasets.items() if d.labels.mode != "none"]
    counts = tmp_path / "samples.json"  # a corpus's samples/index.parquet row counts (here: made up, 1000 each)
    counts.write_text(json.dumps({n: 1000 for n in downstream}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_hours.py"), str(out / "gpu_check.json"),
                           "--config", str(ROOT / "config" / "config.yaml"), "--out", str(tmp_path / "hours.md"),
                           "--samples", str(counts), "--corpus-windows", "1e6"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "hours.json").read_text())
    stages = {r["stage"]: r for r in result["rows"]}
    assert set(stages) == {"train_tokenizer", "pretrain", "extract_codes", "finetune"}
    for r in result["rows"]:
        assert _positive(r["gpu_hours"]) and _positive(r["wall_hours"]), r
    # the main run, each ablation and each tokenizer variant's run, 19 channels × 30 one-second patches per window;
    # the schedule is held in epochs: steps = epochs × (corpus windows // batch)
    tc = cfg.pretrain.train
    steps = tc.epochs * (10**6 // tc.batch_size)
    assert stages["pretrain"]["units"] == len(cfg.pretrain_runs()) * steps * tc.batch_size * 19 * 30
    assert all(_positive(r["gpu_hours"]) for r in result["finetune"] if "method" in r)
    assert {r["dataset"] for r in result["finetune"] if "method" in r} == set(downstream)
    assert "| **total** |" in (tmp_path / "hours.md").read_text()


WRAP_HERE = """
import json, socket, sys, tempfile
from pathlib import Path
import torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
import gpu_check
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
# a process group Accelerate does not know about (no LOCAL_RANK): it leaves the model unwrapped, as it does at
# world size 1 on CUDA, so WorldOneDDP must wrap it
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as tmp:
    r = gpu_check.fit_check("tokenizer", gpu_check.Options.smoke_mode(Path(tmp)), Path(tmp), torch.device("cpu"))
print(json.dumps({k: r[k] for k in ("ddp", "resumed_ok", "equal_to_uninterrupted")}))
"""


def test_fit_check_wraps_in_ddp_where_accelerate_does_not():
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", WRAP_HERE, str(SCRIPT.parent)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["ddp"]["wrapped_by"] == "gpu_check (WorldOneDDP)" and r["ddp"]["world_size"] == 1
    assert r["resumed_ok"] and r["equal_to_uninterrupted"]
