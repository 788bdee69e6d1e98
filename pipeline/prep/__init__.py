"""The data plane as a library: raw recordings → manifest → channel plan → preprocessed stores → shards → codes.

One module per step (ingest, standardize, preprocess, windows, splits, shards, codes) and `prepare`, the four data
stages in one process. The stage modules (pipeline.stages), `embed`, the test fixtures and the benchmarks all call
these functions, so every path prepares EEG by the same code. Nothing is imported here: `import pipeline.prep.x`
loads what x needs and no more.
"""
