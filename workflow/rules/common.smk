# Shared by every rule file: paths, per-job settings (pipeline.config.job_settings), resources.
#
# Shell commands: every value that reaches a shell is formatted with `:q` (quoted; a list becomes one quoted word
# per item), so a path with spaces stays one argument and a name cannot become a command. Params hold only what
# changes a job's result (its settings, its inputs' identity), never the interpreter or checkout path: those go in
# the shell command itself (`{PY:q}`), which Snakemake does not compare, so a moved checkout or venv reruns nothing.
import hashlib
import json
import re
import sys

from pipeline.config import BASELINE_METHODS, CLASSICAL_METHODS, job_settings_json, stage_settings_json, tokenizer_run
from pipeline.store.sources import source_fingerprint

# CFG: the typed config, parsed and checked by the Snakefile
RESULTS = CFG.results
CACHE = CFG.cache
PY = sys.executable  # the interpreter running snakemake: the project's venv, on every node (shell only, never params)
# An existing dask scheduler (preprocess, patch, samples): how the job runs, not what it computes, so not a param
SCHEDULER = ["--scheduler", CFG.dask.scheduler] if CFG.dask.scheduler else []
# ... and below how many recordings a stage runs them in-process instead of starting a local cluster (same reason)
SCHEDULER += ["--cluster-min-recordings", str(CFG.dask.cluster_min_recordings)]
DATASETS = list(CFG.datasets)
DEMO_STAMP = f"{CACHE}/demo/fetched.json"
SOURCE_HASHES = f"{RESULTS}/.source-hashes"  # per user dataset: its files' sha256 by (path, size, mtime) (data.smk)
PAPER_TABLES = f"{workflow.basedir}/config/paper_tables.yaml"  # the published numbers the tables print beside ours
TOKENIZER = CFG.tokenizer
PRETRAIN = CFG.pretrain
FINETUNE = CFG.finetune
# Tokenizers by folder name (the main one, then tokenizer.variants), and pretraining runs → the tokenizer whose codes
# they learn (main run and ablations: the main tokenizer; tokenizer-<variant>: that variant's)
TOKENIZERS = CFG.tokenizers()
RUN_TOKENIZER = CFG.pretrain_runs()
PRETRAIN_RUNS = list(RUN_TOKENIZER)
# Labelled downstream datasets, and fine-tuning methods by their folder name (ablation:<run> → ablation-<run>)
DOWNSTREAM = [n for n, ds in CFG.datasets.items() if ds.role in ("downstream", "both") and ds.labels.mode != "none"]
METHODS = {m.replace(":", "-"): m for m in FINETUNE.methods}
# A tokenizer trained elsewhere (tokenizer.pretrained) replaces this run's train_tokenizer.
TOKENIZER_DIR = TOKENIZER.pretrained or f"{RESULTS}/tokenizer/{TOKENIZER.name}"


wildcard_constraints:
    dataset="|".join(DATASETS),
    run="|".join(re.escape(r) for r in PRETRAIN_RUNS),
    tok="|".join(re.escape(t) for t in TOKENIZERS),
    method="|".join(re.escape(m) for m in METHODS),
    seed=r"\d+",


def settings(rule):
    """params entry: what this rule's job reads (pipeline.config.job_settings) as JSON — the rerun trigger and the
    stage's --settings. Wildcards pick the job: dataset, pretraining run, fine-tuning method."""
    def of_job(wc):
        picked = {k: getattr(wc, k) for k in ("dataset", "run") if hasattr(wc, k)}
        if hasattr(wc, "tok"):
            picked["tokenizer"] = wc.tok
        if hasattr(wc, "method"):
            picked["method"] = METHODS[wc.method]
        return job_settings_json(CFG, rule, **picked)
    return of_job


def res(rule_name, key, default):
    """Per-rule resources from the config's `resources` section (profiles may override)."""
    return config.get("resources", {}).get(rule_name, {}).get(key, default)


def launch_shape(rule_name):
    """(GPUs per node, nodes) a torch rule asks for: `resources.<rule>.gpu` and `.nodes`."""
    gpus, nodes = int(res(rule_name, "gpu", 0)), int(res(rule_name, "nodes", 1))
    if gpus < 0 or nodes < 1:
        raise ValueError(f"resources.{rule_name}: gpu must be >= 0 and nodes >= 1 (got gpu={gpus}, nodes={nodes})")
    return gpus, nodes


def torch_resources(rule_name, gpu=True):
    """sbatch-facing resources of a torch rule (snakemake-executor-plugin-slurm's names). One node: `gpu=N`
    (→ --gpus=N); several: `gres=gpu:N`, which SLURM reads per node (--gpus counts the whole job and may split
    it unevenly), or `tasks=M` without GPUs (the plugin's --ntasks default of 1 does not fit M nodes). GPU jobs
    get --cpus-per-gpu (default: the rule's threads spread over its GPUs) and resources.<rule>.slurm_partition.
    `gpu=False`: this job runs without GPUs whatever the config says (finetune's classical baselines)."""
    gpus, nodes = launch_shape(rule_name)
    gpus = gpus if gpu else 0
    out = {"nodes": nodes}
    if nodes > 1:
        out.update({"gres": f"gpu:{gpus}"} if gpus else {"tasks": nodes})
    else:
        out["gpu"] = gpus
    if gpus:
        threads = int(res(rule_name, "threads", 2))
        cpus = int(res(rule_name, "cpus_per_gpu", -(-threads // gpus)))
        if cpus < 1 or cpus * gpus < threads:
            raise ValueError(f"resources.{rule_name}: cpus_per_gpu={cpus} × gpu={gpus} must be at least 1 and cover "
                             f"threads={threads} (the job step asks for its threads out of the job's CPUs)")
        out["cpus_per_gpu"] = cpus
    if res(rule_name, "slurm_partition", None) is not None:
        out["slurm_partition"] = res(rule_name, "slurm_partition", None)
    return out


def pretrain_datasets():
    return [name for name, ds in CFG.datasets.items() if ds.role in ("pretrain", "both")]


def pretrain_shards():
    return [f"{RESULTS}/{name}/shards" for name in pretrain_datasets()]


def tokenizer_dir(tok):
    """A tokenizer's folder: the main one may be trained elsewhere (tokenizer.pretrained); variants are trained here."""
    return TOKENIZER_DIR if tok == TOKENIZER.name else f"{RESULTS}/tokenizer/{tok}"


def tokenizer_model(tok):
    """Input: the tokenizer's weights (ancient when trained elsewhere: its folder's mtime is no trigger)."""
    path = f"{tokenizer_dir(tok)}/model.safetensors"
    return ancient(path) if tok == TOKENIZER.name and TOKENIZER.pretrained else path


def pretrain_codes(run):
    """Code folders of the pretraining datasets for pretraining run `run`: its tokenizer's, or (main tokenizer only)
    an existing store (`pretrain.codes`)."""
    names = pretrain_datasets()
    tok = RUN_TOKENIZER[run]
    if PRETRAIN.codes and tok == TOKENIZER.name:
        return [ancient(f"{PRETRAIN.codes}/{name}") for name in names]
    return [f"{RESULTS}/codes/{tok}/{name}" for name in names]


def accelerate_launch(rule_name, mixed):
    """The stage's launcher's arguments after `{PY:q}` (pipeline/launch.py): inside the job it checks the grant
    against the request, then runs `accelerate launch` with one process per granted GPU (one CPU process without),
    one launcher per node. A list: the shell command formats it with `:q`."""
    gpus, nodes = launch_shape(rule_name)
    return ["-m", "pipeline.launch", "--rule", rule_name, "--gpus", str(gpus), "--nodes", str(nodes),
            "--mixed-precision", mixed, "--"]


def file_sha256(path):
    """A param that reruns a rule when a file of the checkout changes, without its absolute path in the params."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pretrained_run(method):
    """The pretraining run a fine-tuning method starts from (scratch: for its architecture only); None for the
    baselines (classical regressions, braindecode networks), which need none."""
    method = METHODS[method]
    if method in BASELINE_METHODS:
        return None
    if method.startswith("ablation:"):
        return f"{RESULTS}/pretrain/{method.split(':', 1)[1]}"
    if method.startswith("tokenizer:"):
        return f"{RESULTS}/pretrain/{tokenizer_run(method.split(':', 1)[1])}"
    return f"{RESULTS}/pretrain/{PRETRAIN.name}"


def finetune_outputs():
    return [f"{RESULTS}/finetune/{ds}/{m}/seed-{s}/metrics.json" for ds in DOWNSTREAM for m in METHODS
            for s in FINETUNE.seeds]


def dataset_outputs(name):
    """What the data plane publishes for a dataset the DAG uses: ingest → standardize, then shards (a pretraining
    dataset) and samples (a labelled downstream one). Not preprocessed/: the one intermediate a user may delete to
    free disk once shards and samples exist (TUEG's is terabytes); requested, its deletion would rerun the chain."""
    ds = CFG.datasets[name]
    out = [f"{RESULTS}/{name}/{leaf}" for leaf in ("manifest.parquet", "events.parquet", "montage.parquet")]
    out += [f"{RESULTS}/{name}/shards"] if name in pretrain_datasets() else []
    out += [f"{RESULTS}/{name}/samples"] if name in DOWNSTREAM else []
    return ([DEMO_STAMP] if ds.fetch == "demo" else []) + out


def all_outputs():
    """Every output of the DAG but the preprocessed stores, not only its last ones. Snakemake 9 checks a job for
    missing output only when it is a target or a job that depends on it must run (dag.py update_needrun): a
    fine-tuning folder deleted under an up-to-date table.md was never rebuilt. Requested here, a deleted output is
    rebuilt by the next plain run, and what depends on it reruns (tests/test_data_reruns.py keeps this list equal to
    the DAG's outputs). The training rules' outputs come from the rules themselves (a new figure is a target too)."""
    used = dict.fromkeys(pretrain_datasets() + DOWNSTREAM)  # datasets some rule reads, in config order
    data = [path for name in CFG.datasets if name in used for path in dataset_outputs(name)]
    trained = [tok for tok in TOKENIZERS if not (tok == TOKENIZER.name and TOKENIZER.pretrained)]
    tokenizer = expand(list(rules.train_tokenizer.output), tok=trained)
    codes = [path for run in PRETRAIN_RUNS for path in pretrain_codes(run)
             if not (PRETRAIN.codes and RUN_TOKENIZER[run] == TOKENIZER.name)]  # an existing store: no output
    pretrain = expand(list(rules.pretrain.output), run=PRETRAIN_RUNS)
    tables = list(rules.tables.output) if DOWNSTREAM else []
    return list(dict.fromkeys(data + tokenizer + codes + pretrain + finetune_outputs() + tables))
