# Tokenizer training on the pretraining datasets' shards, then codes for every dataset.


rule train_tokenizer:
    input:
        shards=pretrain_shards(),
    output:
        model=f"{RESULTS}/tokenizer/{TOKENIZER.name}/model.safetensors",
        metrics=f"{RESULTS}/tokenizer/{TOKENIZER.name}/metrics.json",
        plots=report(multiext(f"{RESULTS}/tokenizer/{TOKENIZER.name}/", "loss.png", "codebook_usage.png",
                              "reconstructions.png"), category="1. tokenizer"),
    params:
        settings=settings("train_tokenizer"),
        out=f"{RESULTS}/tokenizer/{TOKENIZER.name}",
        launch=accelerate_launch("train_tokenizer", TOKENIZER.train.mixed_precision),
    # Checkpoints live beside the outputs and survive a failed or killed job: a rerun resumes.
    log:
        f"{RESULTS}/logs/train_tokenizer.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_tokenizer.tsv"
    threads: res("train_tokenizer", "threads", 2)
    resources:
        mem_mb=res("train_tokenizer", "mem_mb", 8000),
        runtime=res("train_tokenizer", "runtime", 720),
        **torch_resources("train_tokenizer"),
    shell:
        "{PY:q} {params.launch:q} -m pipeline train-tokenizer {input.shards:q} --out {params.out:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule extract_codes:
    input:
        model=ancient(f"{TOKENIZER_DIR}/model.safetensors") if TOKENIZER.pretrained else rules.train_tokenizer.output.model,
        shards=f"{RESULTS}/{{dataset}}/shards",
    output:
        directory(f"{RESULTS}/codes/{TOKENIZER.name}/{{dataset}}"),
    params:
        tokenizer=TOKENIZER_DIR,
        launch=accelerate_launch("extract_codes", "no"),
    log:
        f"{RESULTS}/logs/{{dataset}}/extract_codes.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/extract_codes.tsv"
    resources:
        mem_mb=res("extract_codes", "mem_mb", 4000),
        runtime=res("extract_codes", "runtime", 240),
        **torch_resources("extract_codes"),
    shell:
        "{PY:q} {params.launch:q} -m pipeline extract-codes {input.shards:q} --tokenizer {params.tokenizer:q}"
        " --out {output:q} > {log:q} 2>&1"
