# BrainRVQ pipeline. Thin by design: config, schema validation, the rule files, and `all`.
#   snakemake --cores 2 --configfile config/demo.yaml          (the embedded demo)
#   snakemake --profile profiles/slurm all                     (config/config.yaml on a cluster)
from snakemake.utils import min_version, validate

min_version("9.0")

# A --configfile on the command line replaces the paper setup instead of being merged into it.
if not config:
    configfile: "config/config.yaml"

validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/pretrain.smk"


rule all:
    input:
        all_outputs(),
