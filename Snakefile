# BrainRVQ pipeline. Thin by design: config, schema validation, the rule files, and `all`.
#   snakemake --cores 2 --configfile config/demo.yaml          (the embedded demo)
#   snakemake --profile profiles/slurm all                     (config/config.yaml on a cluster)
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# A --configfile on the command line replaces the paper setup instead of being merged into it.
if not config:
    configfile: "config/config.yaml"

# Dataset entries may live in their own files (config/datasets/*.yaml): merge them before validating.
from pipeline.config import merge_dataset_files

_merged = merge_dataset_files(config, base_dir=Path(workflow.basedir))
_merged.pop("dataset_files", None)
config.clear()
config.update(_merged)
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"


rule all:
    input:
        all_outputs(),
