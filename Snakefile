# BrainRVQ pipeline. Thin by design: config, schema validation, the rule files, and `all`.
#   snakemake --cores 2 --configfile config/demo.yaml          (the embedded demo)
#   snakemake --profile slurm all                              (config/config.yaml on a cluster; ./slurm is
#                                                               a link to profiles/slurm, which works too)
#   snakemake --cores 2 --configfile .test/config.yaml         (the tiny DAG of the workflow tests)
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# A --configfile on the command line replaces the paper setup instead of being merged into it.
if not config:
    configfile: "config/config.yaml"

# Dataset entries may live in their own files (config/datasets/*.yaml): merge them, then check the whole tree before
# any job is planned — typed sections first (unknown key → its name, section and the nearest valid name), then the
# schema's ranges. A bad config ends Snakemake with the one message as its first line of output, not a traceback
# or a schema dump.
import sys

from pipeline.config import ConfigError, check_schema, merge_dataset_files, parse_config

try:
    _merged = merge_dataset_files(config, base_dir=Path(workflow.basedir))
    _merged.pop("dataset_files", None)
    CFG = parse_config(_merged)
    check_schema(_merged, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
except ConfigError as exc:
    sys.exit(f"config error: {exc}")
config.clear()
config.update(_merged)


# `snakemake --report report.html` opens on this page: the results table, its footnotes and figures (the rule graph
# beside them); captions for every report file live in workflow/report/.
report: "workflow/report/workflow.rst"

from pipeline.eval.report_page import register_directives

register_directives()  # `.. data-image::`, the description's inlined figures


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"


rule all:
    input:
        all_outputs(),


# A failed run ends with each failed job's own error lines on the console, not only Snakemake's pointer to its log.
onerror:
    from pipeline.failures import explain

    print(explain(log), file=sys.stderr)
