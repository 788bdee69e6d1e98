"""fetch-demo: the embedded demo corpus — real EEG shipped inside pinned PyPI wheels.

    python -m pipeline fetch-demo --config config/demo.yaml
    python -m pipeline fetch-demo --settings JSON --cache resources/cache

Writes <cache>/demo/fetched.json (every extracted file with its sha256), the stage's output. The library, with
what it checks (pinned hashes, members confined to the cache): pipeline/prep/demo_corpus.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import WheelSource, from_mapping, load_config
from pipeline.errors import StageFailed
from pipeline.prep.demo_corpus import fetch_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="pipeline config YAML holding `demo_corpus`")
    parser.add_argument("--settings", default=None, help="the `demo_corpus` mapping as JSON (instead of --config)")
    parser.add_argument("--cache", default=None, help="cache folder (default: the config's `cache`)")


def main(args: argparse.Namespace) -> None:
    if args.settings:
        raw = json.loads(args.settings)
        sources = {k: from_mapping(WheelSource, v, f"demo_corpus.{k}") for k, v in raw.items()}
        cache = Path(args.cache or "resources/cache")
    elif args.config:
        cfg = load_config(args.config)
        sources, cache = cfg.demo_corpus, Path(args.cache or cfg.cache)
    else:
        raise StageFailed("fetch-demo needs --config or --settings")
    if not sources:
        raise StageFailed("no demo_corpus wheels configured")
    stamp = fetch_demo(sources, cache)
    print(stamp)
