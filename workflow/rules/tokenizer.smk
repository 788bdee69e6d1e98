# Tokenizer training on the pretraining datasets' shards, then codes for every dataset; wildcard {tok}: the main
# tokenizer (tokenizer.name) and one per tokenizer.variants entry (<name>-<variant>).


rule train_tokenizer:
    input:
        shards=pretrain_shards(),
    output:
        model=f"{RESULTS}/tokenizer/{{tok}}/model.safetensors",
        metrics=f"{RESULTS}/tokenizer/{{tok}}/metrics.json",
        loss=report(f"{RESULTS}/tokenizer/{{tok}}/loss.png", category="1. tokenizer", subcategory="{tok}",
                    caption="../report/tokenizer_loss.rst"),
        usage=report(f"{RESULTS}/tokenizer/{{tok}}/codebook_usage.png", category="1. tokenizer", subcategory="{tok}",
                     caption="../report/tokenizer_usage.rst"),
        reconstructions=report(f"{RESULTS}/tokenizer/{{tok}}/reconstructions.png", category="1. tokenizer",
                               subcategory="{tok}", caption="../report/tokenizer_reconstructions.rst"),
    params:
        settings=settings("train_tokenizer"),  # this tokenizer's section (a variant: the main one, its variant)
        out=lambda wc: f"{RESULTS}/tokenizer/{wc.tok}",
        launch=accelerate_launch("train_tokenizer", TOKENIZER.train.mixed_precision),
    # Checkpoints live beside the outputs and survive a failed or killed job: a rerun resumes.
    log:
        f"{RESULTS}/logs/train_tokenizer/{{tok}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_tokenizer/{{tok}}.tsv"
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
        model=lambda wc: tokenizer_model(wc.tok),
        shards=f"{RESULTS}/{{dataset}}/shards",
    output:
        directory(f"{RESULTS}/codes/{{tok}}/{{dataset}}"),
    params:
        tokenizer=lambda wc: tokenizer_dir(wc.tok),
        launch=accelerate_launch("extract_codes", "no"),
    log:
        f"{RESULTS}/logs/{{dataset}}/extract_codes/{{tok}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/extract_codes/{{tok}}.tsv"
    resources:
        mem_mb=res("extract_codes", "mem_mb", 4000),
        runtime=res("extract_codes", "runtime", 240),
        **torch_resources("extract_codes"),
    shell:
        "{PY:q} {params.launch:q} -m pipeline extract-codes {input.shards:q} --tokenizer {params.tokenizer:q}"
        " --out {output:q} > {log:q} 2>&1"
