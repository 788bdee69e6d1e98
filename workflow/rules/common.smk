# Shared by every rule file: the typed config, paths, per-stage settings, resources.
import sys

from pipeline.config import parse_config, stage_settings_json
from pipeline.stages.fetch_demo import settings_json as demo_settings_json

CFG = parse_config(config)
RESULTS = CFG.results
CACHE = CFG.cache
PY = sys.executable  # the interpreter running snakemake: the project's venv, on every node
DATASETS = list(CFG.datasets)
DEMO_STAMP = f"{CACHE}/demo/fetched.json"


wildcard_constraints:
    dataset="|".join(DATASETS),


def settings(stage):
    """params entry: the stage's resolved section for this dataset as JSON (a rerun trigger)."""
    return lambda wc: stage_settings_json(CFG.datasets[wc.dataset], stage)


def res(rule_name, key, default):
    """Per-rule resources from the config's `resources` section (profiles may override)."""
    return config.get("resources", {}).get(rule_name, {}).get(key, default)


def all_shards():
    return [f"{RESULTS}/{ds}/shards" for ds in DATASETS]
