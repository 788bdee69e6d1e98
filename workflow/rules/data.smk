# The data plane: demo corpus → ingest → standardize → preprocess → patch (per dataset).


rule fetch_demo_corpus:
    output:
        DEMO_STAMP,
    params:
        settings=settings("fetch_demo_corpus"),
    log:
        f"{RESULTS}/logs/fetch_demo_corpus.log",
    shell:
        "{PY:q} -m pipeline fetch-demo --settings {params.settings:q} --cache {CACHE:q} > {log:q} 2>&1"


def ingest_input(wc):
    ds = CFG.datasets[wc.dataset]
    # Demo data arrive through the fetch rule; user data must exist. Their mtime is no trigger (ancient): their
    # content is, through the `content` param.
    return DEMO_STAMP if ds.fetch == "demo" else ancient(ds.path)


def source_content(wc):
    """params entry: the content fingerprint of a user dataset's files (pipeline.store.sources; file sha256s cached
    by path, size and mtime in SOURCE_HASHES), so a changed, added or removed file reruns its ingest and what follows,
    and a touch reruns nothing. Demo data: "" (the fetch rule's settings pin their content)."""
    ds = CFG.datasets[wc.dataset]
    if ds.fetch == "demo":
        return ""
    if wc.dataset not in _SOURCE_CONTENT:  # once per Snakemake process: jobs are re-created while the DAG is built
        _SOURCE_CONTENT[wc.dataset] = source_fingerprint(ds.path, cache=f"{SOURCE_HASHES}/{wc.dataset}.json")
    return _SOURCE_CONTENT[wc.dataset]


_SOURCE_CONTENT = {}


rule ingest:
    input:
        ingest_input,
    output:
        manifest=f"{RESULTS}/{{dataset}}/manifest.parquet",
        events=f"{RESULTS}/{{dataset}}/events.parquet",
    params:
        settings=settings("ingest"),
        content=source_content,
        source=lambda wc: CFG.datasets[wc.dataset].path,
        fmt=lambda wc: CFG.datasets[wc.dataset].format,
        out=lambda wc: f"{RESULTS}/{wc.dataset}",
    log:
        f"{RESULTS}/logs/{{dataset}}/ingest.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/ingest.tsv"
    resources:
        mem_mb=res("ingest", "mem_mb", 2000),
        runtime=res("ingest", "runtime", 60),
    shell:
        "{PY:q} -m pipeline ingest {params.source:q} --out {params.out:q} --dataset {wildcards.dataset:q}"
        " --format {params.fmt:q} --settings {params.settings:q} > {log:q} 2>&1"


rule standardize:
    input:
        manifest=rules.ingest.output.manifest,
    output:
        f"{RESULTS}/{{dataset}}/montage.parquet",
    params:
        settings=settings("standardize"),
    log:
        f"{RESULTS}/logs/{{dataset}}/standardize.log",
    resources:
        mem_mb=res("standardize", "mem_mb", 1000),
        runtime=res("standardize", "runtime", 30),
    shell:
        "{PY:q} -m pipeline standardize {input.manifest:q} --out {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule preprocess:
    input:
        montage=rules.standardize.output[0],
    output:
        directory(f"{RESULTS}/{{dataset}}/preprocessed"),
    params:
        settings=settings("preprocess"),
    threads: CFG.dask.n_workers
    log:
        f"{RESULTS}/logs/{{dataset}}/preprocess.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/preprocess.tsv"
    resources:
        mem_mb=res("preprocess", "mem_mb", 4000),
        runtime=res("preprocess", "runtime", 240),
    shell:
        "{PY:q} -m pipeline preprocess {input.montage:q} --out {output:q} --settings {params.settings:q}"
        " --workers {threads} {SCHEDULER:q} > {log:q} 2>&1"


rule patch:
    input:
        preprocessed=rules.preprocess.output[0],
        # splits (official, by subject) come from the ingest tables beside preprocessed/ (patch's --ingested default)
        manifest=rules.ingest.output.manifest,
        events=rules.ingest.output.events,
    output:
        directory(f"{RESULTS}/{{dataset}}/shards"),
    params:
        settings=settings("patch"),
    threads: CFG.dask.n_workers
    log:
        f"{RESULTS}/logs/{{dataset}}/patch.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/patch.tsv"
    resources:
        mem_mb=res("patch", "mem_mb", 4000),
        runtime=res("patch", "runtime", 240),
    shell:
        "{PY:q} -m pipeline patch {input.preprocessed:q} --out {output:q}"
        " --settings {params.settings:q} --workers {threads} {SCHEDULER:q} > {log:q} 2>&1"
