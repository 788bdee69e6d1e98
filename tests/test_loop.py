"""The shared training loop's ordering contract: a step's checkpoint is written before its held-out evaluation, so
an evaluation that fails (on a GPU: the first one, if a batch were left on the host) costs no training steps, and
the resumed run evaluates that step before it trains on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from pipeline.config import TrainConfig
from pipeline.train.checkpoint import latest
from pipeline.train.loop import StepResult, fit, make_accelerator


class Batches(Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(4, 2, 1, 3, generator=g), "window": torch.arange(4)}


def _step(model, batch) -> StepResult:
    loss = model(batch["x"].flatten(1)).pow(2).mean()
    return StepResult(loss, {"losses": {"loss": float(loss.detach())}})


class EvaluationFailed(RuntimeError):
    pass


def test_a_failed_evaluation_keeps_its_steps_checkpoint_and_is_redone_on_resume(tmp_path: Path):
    tc = TrainConfig(batch_size=4, max_steps=4, lr=1e-2, warmup_steps=1, checkpoint_every=2, eval_every=2,
                     log_every=1)
    calls: list[int] = []

    def evaluate(model, step: int) -> dict:
        calls.append(step)
        if len(calls) == 1:
            raise EvaluationFailed(f"step {step}")
        return {"value": float(step)}

    def run():
        torch.manual_seed(0)
        return fit(torch.nn.Linear(6, 1), tmp_path, tc, make_accelerator(tc), make_data=lambda e, s: Batches(),
                   train_step=_step, evaluate=evaluate)

    with pytest.raises(EvaluationFailed):
        run()
    assert latest(tmp_path / "checkpoints").name == "step-0000002"  # the failed evaluation's step is kept
    result = run()
    assert result.step == 4 and calls == [2, 2, 4]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "heldout"] == [2, 4]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]


def test_training_logs_step_total_rate_eta_and_loss(tmp_path: Path, caplog):
    """A long stage shows step/total, rate, ETA and the loss in its log (the rule log under Snakemake), on the first
    and the last step and every 30 s between; a resumed run counts its rate from where it resumed."""
    tc = TrainConfig(batch_size=4, max_steps=5, lr=1e-2, warmup_steps=1, checkpoint_every=5, eval_every=100,
                     log_every=1)
    caplog.set_level("INFO", logger="pipeline.train.loop")
    fit(torch.nn.Linear(6, 1), tmp_path / "pretrain" / "run", tc, make_accelerator(tc),
        make_data=lambda e, s: Batches(), train_step=_step)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrain/run: step ")]
    assert [line.split(" (")[0] for line in lines] == ["pretrain/run: step 1/5", "pretrain/run: step 5/5"], lines
    assert all(" steps/s · ETA " in line and " · loss " in line and "patches/s" in line for line in lines), lines
    assert lines[-1].split(" · ")[2] == "ETA 0s"


def test_progress_lines_are_exact(monkeypatch):
    import pipeline.progress as progress

    clock = iter([0.0, 10.0, 20.0, 50.0, 60.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    p = progress.Progress("tokenizer/x", 100, start=20)               # t0 = 0; 20 steps done before (a resume)
    assert p.update(30, "loss 2") == "tokenizer/x: step 30/100 (30 %) · 1 steps/s · ETA 1m10s · loss 2"
    assert p.update(40) is None                                        # 10 s after the last line: not yet
    assert p.update(80) == "tokenizer/x: step 80/100 (80 %) · 1.2 steps/s · ETA 17s"
    assert p.update(100) == "tokenizer/x: step 100/100 (100 %) · 1.33 steps/s · ETA 0s"  # the last, always
    assert [progress.duration(s) for s in (5, 75, 3600 * 3 + 4 * 60)] == ["5s", "1m15s", "3h04m"]


_PROGRESS_SCRIPT = ("import logging, sys; logging.basicConfig(level=logging.INFO, format='%(message)s'); "
                    "from pipeline.progress import Progress; p = Progress('pretrain/run', 2, every_s=0); "
                    "p.update(1); p.update(2)")


@pytest.mark.parametrize("stderr_to_log", [True, False])
def test_progress_reaches_the_terminal_when_the_log_is_a_file(tmp_path: Path, stderr_to_log: bool):
    """Under Snakemake in a terminal a stage's stderr is its rule log: the progress lines go to the log and to
    the terminal (the console showed only the rule header). A stage run in the terminal itself prints them once.
    `script` gives the stage a terminal of its own and records what reached it."""
    import shlex
    import shutil
    import subprocess
    import sys

    if shutil.which("script") is None:
        pytest.fail("util-linux `script` is needed to give the stage a terminal (Debian: bsdutils)")
    log = tmp_path / "rule.log"
    stage = f"{shlex.quote(sys.executable)} -c {shlex.quote(_PROGRESS_SCRIPT)}"
    if stderr_to_log:
        stage += f" 2> {shlex.quote(str(log))}"
    terminal = subprocess.run(["script", "-qefc", stage, str(tmp_path / "typescript")], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL).stdout
    expected = ["pretrain/run: step 1/2 (50 %)", "pretrain/run: step 2/2 (100 %)"]
    on_terminal = [line.split(" · ")[0] for line in terminal.splitlines() if line.startswith("pretrain/run")]
    assert on_terminal == expected, terminal
    if stderr_to_log:
        assert [line.split(" · ")[0] for line in log.read_text().splitlines()] == expected
