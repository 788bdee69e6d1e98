"""Loader for N ranks, simulated on this CPU: read amplification, patches/s per rank, recordings per batch.

    python benchmarks/loader.py                       → benchmarks/out/loader.json
    python benchmarks/loader.py --ranks 8 --batch 16 --buffer-chunks 2

Data: the demo EEG (pylossless s01/s02 + PhysioNet S001R02) patched at 10 s windows, chunks of 8 windows (built into
benchmarks/out/work/loader_shards on first use). One epoch of global batches is read by every simulated rank in turn
(WindowBatches, the dataset fit()'s DataLoader indexes, one rank per pass on one core), twice: the first pass warms
the page cache, the second is timed. Two layouts in the same run:
  * streams 1 (before): each rank takes its contiguous slice of every global batch and decodes the chunks it lands in;
  * streams = ranks (after, train.loader_streams): chunks dealt to streams, rank r reads only its own chunks;
    batches kept in the shards' float16/int16 (widened on the device).
Reported per layout: chunks decoded by all ranks / distinct chunks read (read amplification; target ≤ 1.2), patches/s
per rank on one core (and × ranks for a node whose ranks each have a core: an estimate, not a measurement of shared
disk bandwidth), and how correlated a global batch is: distinct recordings per batch and the probability that two
windows of a batch come from the same recording, against Σ p_rec² (windows drawn uniformly from the corpus). The demo
corpus has 3 recordings, so the correlation numbers show the mechanism, not corpus scale. The machine is shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import OUT, demo_shards, machine


def build_shards(root: Path) -> list[Path]:
    return demo_shards(root, window_s=10, chunk_windows=8)


def correlation(batches: list[np.ndarray], recording: np.ndarray) -> dict:
    per_batch, same = [], []
    for b in batches:
        _, counts = np.unique(recording[b], return_counts=True)
        per_batch.append(len(counts))
        same.append(float((counts * (counts - 1)).sum() / (len(b) * (len(b) - 1))))
    _, corpus = np.unique(recording, return_counts=True)
    p = corpus / corpus.sum()
    return {"recordings_per_batch_mean": round(float(np.mean(per_batch)), 2),
            "same_recording_pair_probability": round(float(np.mean(same)), 3),
            "same_recording_pair_probability_uniform": round(float((p ** 2).sum()), 3)}


def run_layout(index, *, ranks: int, batch: int, streams: int, buffer_chunks: int, epoch: int = 0) -> dict:
    from pipeline.data.windows import WindowBatches, cache_for, epoch_batches

    batches = epoch_batches(index, batch_size=batch, seed=0, epoch=epoch, buffer_chunks=buffer_chunks,
                            streams=streams)
    chunk = index.table["chunk"].to_numpy()
    distinct = len(np.unique(chunk[np.concatenate(batches)]))
    cache = cache_for(buffer_chunks=buffer_chunks, streams=streams, world_size=ranks)
    per_rank = []
    for timed in (False, True):  # first pass: page cache; second: timed
        per_rank = []
        for r in range(ranks):
            data = WindowBatches(index, batches, rank=r, world_size=ranks, cache_chunks=cache,
                                 storage_dtypes=streams > 1)
            patches, t0 = 0, time.perf_counter()
            for i in range(len(data)):
                item = data[i]
                patches += int(np.prod(item["x"].shape[:3]))
            per_rank.append({"rank": r, "s": time.perf_counter() - t0, "patches": patches, "decoded": data.decoded,
                             "x_dtype": str(item["x"].dtype).replace("torch.", "")})
    decoded = sum(p["decoded"] for p in per_rank)
    rate = sum(p["patches"] for p in per_rank) / sum(p["s"] for p in per_rank)
    return {"streams": streams, "ranks": ranks, "global_batch": batch, "buffer_chunks": buffer_chunks,
            "cache_chunks": cache, "batches": len(batches), "distinct_chunks_read": distinct,
            "chunks_decoded_all_ranks": decoded, "read_amplification": round(decoded / distinct, 3),
            "patches_per_s_per_rank_one_core": round(rate, 1),
            "patches_per_s_node_estimate": round(rate * ranks, 1),
            "x_dtype": per_rank[0]["x_dtype"],
            **correlation(batches, index.table["recording"].to_numpy()), "per_rank": per_rank}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="global batch (windows); divisible by --ranks")
    parser.add_argument("--buffer-chunks", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT / "loader.json")
    args = parser.parse_args()
    import torch

    from pipeline.data.windows import WindowIndex

    torch.set_num_threads(1)  # one core per simulated rank
    shards = build_shards(OUT / "work" / "loader_shards")
    index = WindowIndex.from_shard_dirs(shards)
    layouts = [run_layout(index, ranks=args.ranks, batch=args.batch, streams=s, buffer_chunks=args.buffer_chunks)
               for s in (1, args.ranks)]
    before, after = layouts
    report = {"benchmark": "loader", "machine": {**machine(), "shared": "yes: 2 cores shared with other sessions"},
              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "windows": len(index),
              "chunks": int(index.table["chunk"].max()) + 1, "recordings": index.table["recording"].n_unique(),
              "layouts": layouts,
              "read_amplification_target": 1.2,
              "read_amplification_pass": after["read_amplification"] <= 1.2,
              "speedup_per_rank_after_over_before": round(after["patches_per_s_per_rank_one_core"]
                                                          / before["patches_per_s_per_rank_one_core"], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for lay in layouts:
        print(f"streams {lay['streams']}: read amplification {lay['read_amplification']} "
              f"({lay['chunks_decoded_all_ranks']} decoded / {lay['distinct_chunks_read']} chunks), "
              f"{lay['patches_per_s_per_rank_one_core']} patches/s per rank, x {lay['x_dtype']}, "
              f"{lay['recordings_per_batch_mean']} recordings per batch, same-recording pairs "
              f"{lay['same_recording_pair_probability']} (uniform {lay['same_recording_pair_probability_uniform']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
