"""EDF reader throughput on the demo recordings: edfio (lazy slices) vs mne (get_data), float32 µV.

    python benchmarks/readers.py     → benchmarks/out/readers.json

Each reader reads every channel of the file in 60 s chunks, three times; the median CPU time counts.
This is the measurement behind pipeline/io/edf.py's choice of edfio with mne as the fallback.
"""

from __future__ import annotations

import statistics
import time

from _common import demo_corpus, write_result

from pipeline.io.edf import EdfioRecording
from pipeline.io.mne_reader import MneRecording


def throughput(reader_cls, path, repeats: int = 3) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        rec = reader_cls(path)
        n_total, sf = 0, rec.info.sfreq
        step = int(60 * sf)
        for start in range(0, rec.info.n_samples, step):
            block = rec.read(start, min(start + step, rec.info.n_samples))
            n_total += block.size
        times.append(time.process_time() - t0)
    cpu = statistics.median(times)
    return {"msamples_per_cpu_s": n_total / cpu / 1e6, "cpu_s_median": cpu, "samples": n_total}


def main() -> None:
    root = demo_corpus()
    files = {
        "pylossless_s01 (128 ch, 256 Hz, EDF+C)": root / "pylossless/sub-s01/eeg/sub-s01_task-faceO_eeg.edf",
        "physionet_S001R02 (64 ch, 160 Hz, EDF+C)": root / "physionet/S001R02.edf",
    }
    results = {}
    for label, path in files.items():
        results[label] = {name: throughput(cls, path) for name, cls in (("edfio", EdfioRecording), ("mne", MneRecording))}
        r = results[label]
        r["edfio_over_mne"] = r["edfio"]["msamples_per_cpu_s"] / r["mne"]["msamples_per_cpu_s"]
    write_result("readers", {"files": results})


if __name__ == "__main__":
    main()
