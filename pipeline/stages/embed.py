"""embed: features from your own EDF files — one pretrained-encoder embedding per window → parquet.

    python -m pipeline embed <EDF file or folder> --model results/demo/pretrain/<name> --out features.parquet \\
        [--config config/demo.yaml --dataset demo_physionet] [--window-s 30] [--reject-uv 1000] [--batch-windows 16]

Runs ingest → standardize → preprocess → patch in one process, in a temporary work folder (kept with
--keep-work, where a rerun reuses what is up to date), then runs the pretrained backbone over every
clean window (eval mode, nothing masked) and mean-pools its output over the valid tokens (channels that
exist and are not masked, all patches). Settings: those of `--dataset` in `--config` (montage, ingest,
preprocess, patch sections, as the workflow resolves them), else the defaults (standard 10-20 channels,
PreprocessConfig(), PatchConfig(window_s=--window-s)). The notch uses a recording's own mains frequency
where it states one (BIDS PowerLineFrequency), else --mains, else the configured one: the workflow's rule,
pipeline.prep.preprocess.mains_for.

Output: one row per window — recording, source_path, subject, start_s, window_s, n_channels_valid and
`embedding` (fixed-size list<float32>); the file's metadata holds the model fingerprint, the settings
and the rejected recordings with their reasons. Rejected recordings are reported and skipped; the
command fails (exit 1) only when no window at all was embedded, and says which option to change when the
amplitude rule rejected them all (--reject-uv, --window-s).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.prep.prepare import DEFAULT_CONFIG, DEFAULT_WINDOW_S, PrepareSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="EDF/BDF file, folder of them, or BIDS root")
    parser.add_argument("--model", required=True, help="pretrain folder (model.safetensors) or a .safetensors file")
    parser.add_argument("--out", required=True, help="parquet file to write")
    parser.add_argument("--config", default=None,
                        help=f"pipeline config whose --dataset settings to use (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--dataset", default=None, help="dataset of --config whose settings to use")
    parser.add_argument("--window-s", type=float, default=None,
                        help=f"window length in seconds (default: the dataset's, else {DEFAULT_WINDOW_S:g})")
    parser.add_argument("--reject-uv", type=float, default=None,
                        help="amplitude threshold (µV): a second above it is rejected, with every window touching it "
                             "(default: the dataset's, else the preprocess default)")
    parser.add_argument("--mains", type=float, default=None,
                        help="mains frequency (Hz) to notch where a recording does not state its own")
    parser.add_argument("--format", default="auto", help="auto | edf | bdf | bids | a dataset adapter")
    parser.add_argument("--batch-windows", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="torch device (auto: cuda when available, else cpu)")
    parser.add_argument("--keep-work", default=None, help="work folder to keep (default: a temporary one)")


def main(args: argparse.Namespace) -> None:
    from pipeline.embedding import embed

    settings = PrepareSettings.resolve(config=args.config, dataset=args.dataset, window_s=args.window_s,
                                       mains=args.mains, reject_uv=args.reject_uv)
    table = embed(args.source, args.model, args.out, settings=settings, fmt=args.format,
                  batch_windows=args.batch_windows, device=args.device, keep_work=args.keep_work)
    rejected = json.loads(table.schema.metadata[b"rejected"])
    for r in rejected:
        print(f"rejected {r['recording']} ({r['stage']}): {r['reason']}", file=sys.stderr)
    print(f"{table.num_rows} windows embedded → {args.out}"
          + (f"; {len(rejected)} recording(s) rejected" if rejected else ""))
