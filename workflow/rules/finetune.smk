# Labelled downstream samples, fine-tuning per dataset × method × seed, and the result tables.


rule samples:
    input:
        preprocessed=rules.preprocess.output[0],
        manifest=rules.ingest.output.manifest,
        events=rules.ingest.output.events,
    output:
        directory(f"{RESULTS}/{{dataset}}/samples"),
    params:
        settings=settings("samples"),
        ingested=lambda wc: f"{RESULTS}/{wc.dataset}",
    threads: CFG.dask.n_workers
    log:
        f"{RESULTS}/logs/{{dataset}}/samples.log",
    resources:
        mem_mb=res("patch", "mem_mb", 4000),
        runtime=res("patch", "runtime", 240),
    shell:
        "{PY:q} -m pipeline patch {input.preprocessed:q} --out {output:q} --ingested {params.ingested:q}"
        " --settings {params.settings:q} --workers {threads} {SCHEDULER:q} > {log:q} 2>&1"


def finetune_model(wc):
    run = pretrained_run(wc.method)
    return [] if run is None else [f"{run}/model.safetensors"]


rule finetune:
    input:
        samples=f"{RESULTS}/{{dataset}}/samples",
        model=finetune_model,
    output:
        metrics=f"{RESULTS}/finetune/{{dataset}}/{{method}}/seed-{{seed}}/metrics.json",
    params:
        settings=settings("finetune"),  # this method's keys only: another method's lr or a new seed reruns nothing
        labels=lambda wc: stage_settings_json(CFG.datasets[wc.dataset], "labels"),
        method=lambda wc: METHODS[wc.method],
        pretrained=lambda wc: ["--pretrained", pretrained_run(wc.method)] if pretrained_run(wc.method) else [],
        out=lambda wc: f"{RESULTS}/finetune/{wc.dataset}/{wc.method}/seed-{wc.seed}",
        launch=lambda wc: [] if METHODS[wc.method] in CLASSICAL_METHODS
        else accelerate_launch("finetune", CFG.finetune_for(wc.dataset).mixed_precision),
    log:
        f"{RESULTS}/logs/{{dataset}}/finetune/{{method}}-seed-{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/finetune/{{method}}-seed-{{seed}}.tsv"
    threads: res("finetune", "threads", 2)
    resources:
        mem_mb=res("finetune", "mem_mb", 8000),
        runtime=res("finetune", "runtime", 240),
        # the classical baselines run without GPUs (and without the launcher)
        **{key: (lambda wc, key=key: torch_resources("finetune", gpu=METHODS[wc.method] not in CLASSICAL_METHODS).get(key))
           for key in torch_resources("finetune")},
    shell:
        "{PY:q} {params.launch:q} -m pipeline finetune {input.samples:q} --out {params.out:q} --method {params.method:q}"
        " --seed {wildcards.seed:q} --dataset {wildcards.dataset:q} --labels {params.labels:q}"
        " --settings {params.settings:q} {params.pretrained:q} > {log:q} 2>&1"


def quality_summaries():
    """DATASET=PATH per downstream dataset: the quality sections its stages write (standardize:
    <ds>/montage_quality.json beside montage.parquet; the samples' patch: <ds>/samples/quality.json), read by the
    tables stage for the footnotes. Neither is a declared output, so the tables rule depends on their writers'
    outputs (montage.parquet, samples/)."""
    return [f"{ds}={RESULTS}/{ds}/{name}" for ds in DOWNSTREAM for name in ("montage_quality.json",
                                                                             "samples/quality.json")]


rule tables:
    input:
        results=finetune_outputs(),
        montage=expand(f"{RESULTS}/{{dataset}}/montage.parquet", dataset=DOWNSTREAM),
        samples=expand(f"{RESULTS}/{{dataset}}/samples", dataset=DOWNSTREAM),
    output:
        # the report opens on workflow/report/workflow.rst, which includes table.rst and shows the two figures
        md=report(f"{RESULTS}/tables/table.md", category="0. results", caption="../report/table.rst"),
        rst=f"{RESULTS}/tables/table.rst",
        csv=report(f"{RESULTS}/tables/summary.csv", category="0. results", caption="../report/summary.rst"),
        seeds=report(f"{RESULTS}/tables/results.csv", category="0. results", caption="../report/seeds.rst"),
        plot=report(f"{RESULTS}/tables/results.png", category="0. results", caption="../report/results.rst"),
        curves=report(f"{RESULTS}/tables/finetune_curves.png", category="0. results",
                      caption="../report/finetune_curves.rst"),
        paired=report(f"{RESULTS}/tables/paired.csv", category="0. results", caption="../report/paired.rst"),
    params:
        root=f"{RESULTS}/finetune",
        out=f"{RESULTS}/tables",
        datasets=DOWNSTREAM,
        quality=quality_summaries(),
        # the published numbers: their content is the rerun trigger, their path (in the checkout) is not
        paper=file_sha256(PAPER_TABLES),
    log:
        f"{RESULTS}/logs/tables.log",
    shell:
        "{PY:q} -m pipeline tables {params.root:q} --out {params.out:q} --paper {PAPER_TABLES:q}"
        " --datasets {params.datasets:q} --quality {params.quality:q} > {log:q} 2>&1"
