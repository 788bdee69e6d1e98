# Masked hierarchical code prediction on the pretraining datasets' shards and their cached codes: the main run
# (pretrain.name), one run per configured ablation (pretrain.ablations) and one per tokenizer variant
# (tokenizer-<variant>, on that variant's codes).


rule pretrain:
    input:
        shards=pretrain_shards(),
        codes=lambda wc: pretrain_codes(wc.run),
        tokenizer=lambda wc: tokenizer_model(RUN_TOKENIZER[wc.run]),
    output:
        model=f"{RESULTS}/pretrain/{{run}}/model.safetensors",
        metrics=f"{RESULTS}/pretrain/{{run}}/metrics.json",
        loss=report(f"{RESULTS}/pretrain/{{run}}/loss.png", category="2. pretraining", subcategory="{run}",
                    caption="../report/pretrain_loss.rst"),
        accuracy=report(f"{RESULTS}/pretrain/{{run}}/accuracy.png", category="2. pretraining", subcategory="{run}",
                        caption="../report/pretrain_accuracy.rst"),
    params:
        # the run's own section (ablations: the main section with their overrides), not the other runs: a rerun trigger
        settings=settings("pretrain"),
        out=lambda wc: f"{RESULTS}/pretrain/{wc.run}",
        tokenizer=lambda wc: tokenizer_dir(RUN_TOKENIZER[wc.run]),
        launch=accelerate_launch("pretrain", PRETRAIN.train.mixed_precision),
    # Checkpoints live beside the outputs and survive a failed or killed job: a rerun resumes.
    log:
        f"{RESULTS}/logs/pretrain/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{run}}.tsv"
    threads: res("pretrain", "threads", 2)
    resources:
        mem_mb=res("pretrain", "mem_mb", 8000),
        runtime=res("pretrain", "runtime", 1440),
        **torch_resources("pretrain"),
    shell:
        "{PY:q} {params.launch:q} -m pipeline pretrain --shards {input.shards:q} --codes {input.codes:q}"
        " --tokenizer {params.tokenizer:q} --out {params.out:q} --settings {params.settings:q} > {log:q} 2>&1"
