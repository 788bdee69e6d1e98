"""docs/fidelity.md: current with its source, and the paper config reproduces the published column."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import ConfigError, TrainConfig, load_config, to_dict, with_epochs
from pipeline.eval import fidelity


@pytest.fixture(scope="module")
def paper():
    return load_config(fidelity.CONFIG)


def test_paper_config_resolves_to_the_published_column(paper):
    assert fidelity.mismatches(paper, fidelity.load_source()) == []


def test_a_drifted_value_is_reported(paper):
    drifted = dataclasses.replace(paper, finetune=dataclasses.replace(paper.finetune, layer_decay=0.65))
    assert fidelity.mismatches(drifted, fidelity.load_source()) == [
        "finetune/layer-wise lr decay: finetune.layer_decay = 0.65, published 0.9"]


def test_every_row_has_a_source_and_either_a_key_or_a_gap():
    for row in fidelity.load_source()["rows"]:
        assert row["source"] and row["stage"] in ("tokenizer", "pretrain", "finetune"), row
        assert ("key" in row) != ("gap" in row), row


def test_the_doc_is_current():
    assert fidelity.main(["--check"]) == 0, "run: python -m pipeline.eval.fidelity --write"


def test_our_additions_are_pretraining_runs_the_tables_report(paper):
    for add in fidelity.load_source()["additions"]:
        run = paper.pretrain.ablations[add["run"]]
        assert to_dict(run) == {"model": add["overrides"].get("model", {}), "mask": add["overrides"].get("mask", {})}
        assert f"ablation:{add['run']}" in paper.finetune.methods


def test_epochs_become_steps_over_the_corpus():
    tc = TrainConfig(batch_size=64, epochs=20, warmup_epochs=5, max_steps=1, warmup_steps=0)
    got = with_epochs(tc, 1000)  # 15 full batches per epoch (the last partial one dropped)
    assert (got.max_steps, got.warmup_steps) == (300, 75)
    assert with_epochs(TrainConfig(max_steps=7), 10) == TrainConfig(max_steps=7)
    with pytest.raises(ConfigError, match="batch_size"):
        with_epochs(tc, 10)
