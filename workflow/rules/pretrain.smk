# Masked hierarchical code prediction on the pretraining datasets' shards and their cached codes.


rule pretrain:
    input:
        shards=pretrain_shards(),
        codes=pretrain_codes(),
        tokenizer=ancient(f"{TOKENIZER_DIR}/model.safetensors") if TOKENIZER.pretrained else rules.train_tokenizer.output.model,
    output:
        model=f"{RESULTS}/pretrain/{PRETRAIN.name}/model.safetensors",
        metrics=f"{RESULTS}/pretrain/{PRETRAIN.name}/metrics.json",
        plots=multiext(f"{RESULTS}/pretrain/{PRETRAIN.name}/", "loss.png", "accuracy.png"),
    params:
        settings=json.dumps(to_dict(PRETRAIN), sort_keys=True),
        out=f"{RESULTS}/pretrain/{PRETRAIN.name}",
        tokenizer=TOKENIZER_DIR,
        launch=accelerate_launch("pretrain", PRETRAIN.train.mixed_precision),
    # Checkpoints live beside the outputs and survive a failed or killed job: a rerun resumes.
    log:
        f"{RESULTS}/logs/pretrain.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain.tsv"
    threads: res("pretrain", "threads", 2)
    resources:
        mem_mb=res("pretrain", "mem_mb", 8000),
        runtime=res("pretrain", "runtime", 1440),
        gpu=res("pretrain", "gpu", 0),
    shell:
        "{params.launch} -m pipeline pretrain --shards {input.shards:q} --codes {input.codes:q}"
        " --tokenizer {params.tokenizer:q} --out {params.out:q} --settings {params.settings:q} > {log} 2>&1"
