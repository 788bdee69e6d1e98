"""Result tables in the papers' layout: this run's fine-tuning seeds beside the published numbers.

Input: every `metrics.json` under a fine-tuning root (`<root>/<dataset>/<method>/seed-<s>/metrics.json`, as
written by the finetune stage and by `pipeline.eval.baseline`), and optionally `config/paper_tables.yaml`.
Output (each written atomically):
  results.csv   long format: dataset, method, seed, metric, value (test split)
  summary.csv   dataset, method, metric, mean, std (ddof=1), n_seeds
  results.md    one Markdown table per dataset: rows = methods (this run's, then "(published)" ones)
  table.md      all datasets in one table, columns grouped by dataset
  paired.csv    seed-paired differences: pretrained (`full`) − `scratch` and − the best baseline, per dataset and
                metric, mean over seeds with a 95 % t-interval (also a section of results.md and table.md)
  table.rst     the combined table, footnotes, paired differences and every seed for the Snakemake report's
                landing page (pipeline.eval.report_page)
  results.png, finetune_curves.png   the figures (pipeline.eval.plots)
Every table's footnotes carry each dataset's data-quality line from its stages' quality summaries (`quality=`,
pipeline.eval.quality_notes).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

from pipeline.eval.metrics import METRIC_LABELS, TASK_METRICS
from pipeline.store.atomic import write_text_atomic

log = logging.getLogger(__name__)

SEED_NOTE = ("Cells: mean ± standard deviation over seeds of the test-split metric (0–1 scale, 4 decimals); "
             "std is the sample standard deviation (ddof = 1); \"± n/a\" marks a single seed; \"—\" a metric "
             "not available. Binary balanced accuracy thresholds P(positive) at 0.5, multi-class metrics use "
             "the arg-max class; AUC-PR is average precision.")
PUBLISHED_NOTE = ("\"(published)\" rows are copied from the cited papers (mean ± std over the seeds those papers "
                  "report); they come from those papers' own splits and preprocessing, not from this run.")


@dataclass(frozen=True)
class PublishedRow:
    method: str
    source: str
    values: dict[str, tuple[float, float | None]]
    n_seeds: int | None = None


@dataclass(frozen=True)
class PaperDataset:
    name: str
    title: str
    task: str | None
    metrics: tuple[str, ...]
    rows: tuple[PublishedRow, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------- inputs

def _task_of_metrics(metrics: Sequence[str]) -> str | None:
    for task, names in TASK_METRICS.items():
        if set(metrics) <= set(names):
            return task
    return None


def load_paper_tables(path: str | Path) -> dict[str, PaperDataset]:
    """Parse paper_tables.yaml: `datasets: {name: {task, title, metrics: [...], rows: [{method, source, values}]}}`."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    datasets = doc.get("datasets")
    if not isinstance(datasets, dict):
        raise ValueError(f"{path}: expected a top-level `datasets:` mapping")
    out: dict[str, PaperDataset] = {}
    for name, entry in datasets.items():
        entry = entry or {}
        metrics = tuple(entry.get("metrics") or ())
        unknown = sorted(set(metrics) - set(METRIC_LABELS))
        if unknown:
            raise ValueError(f"{path}: dataset {name}: unknown metrics {unknown}; known: {sorted(METRIC_LABELS)}")
        task = entry.get("task") or (_task_of_metrics(metrics) if metrics else None)
        if task is not None and task not in TASK_METRICS:
            raise ValueError(f"{path}: dataset {name}: task must be binary or multiclass, got {task!r}")
        if not metrics and task is not None:
            metrics = TASK_METRICS[task]
        rows = []
        for i, row in enumerate(entry.get("rows") or []):
            where = f"{path}: dataset {name}, row {i}"
            if not row.get("method") or not row.get("source"):
                raise ValueError(f"{where}: every published row needs `method` and `source`")
            values: dict[str, tuple[float, float | None]] = {}
            for metric, pair in (row.get("values") or {}).items():
                if metric not in metrics:
                    raise ValueError(f"{where}: metric {metric!r} is not in the dataset's metrics {list(metrics)}")
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise ValueError(f"{where}: {metric} must be [mean, std] (std may be null), got {pair!r}")
                values[metric] = (float(pair[0]), None if pair[1] is None else float(pair[1]))
            n = row.get("n_seeds")
            rows.append(PublishedRow(str(row["method"]), str(row["source"]), values, None if n is None else int(n)))
        out[str(name)] = PaperDataset(str(name), str(entry.get("title") or name), task, metrics, tuple(rows))
    return out


def _seed_from_path(path: Path) -> int | None:
    name = path.parent.name
    if name.startswith("seed-"):
        try:
            return int(name[5:])
        except ValueError:
            return None
    return None


def collect_metrics(root: str | Path) -> list[dict]:
    """Read every metrics.json under `root`; dataset/method/seed fall back to the path when the file omits them."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"fine-tuning root {root} is not a folder")
    records, seen = [], {}
    for path in sorted(root.rglob("metrics.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); re-run the fine-tuning job that wrote it") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("test"), dict):
            log.debug("skipping %s: no `test` metrics (not a fine-tuning result)", path)
            continue
        rel = path.relative_to(root).parts
        fallback = {"dataset": rel[0] if len(rel) >= 4 else None, "method": rel[-3] if len(rel) >= 3 else None,
                    "seed": _seed_from_path(path)}
        for k, v in fallback.items():
            if rec.get(k) is None:
                rec[k] = v
        missing = [k for k in ("dataset", "method", "seed", "task") if rec.get(k) is None]
        if missing:
            raise ValueError(f"{path}: missing {missing}; expected the fine-tuning metrics.json fields")
        if rec["task"] not in TASK_METRICS:
            raise ValueError(f"{path}: task must be binary or multiclass, got {rec['task']!r}")
        key = (str(rec["dataset"]), str(rec["method"]), int(rec["seed"]))
        if key in seen:
            raise ValueError(f"{path} and {seen[key]} both hold {key[0]} / {key[1]} / seed {key[2]}; "
                             "point the stage at one run's finetune folder")
        seen[key] = path
        rec["_path"] = str(path)
        records.append(rec)
    return records


# ------------------------------------------------------------------------------------------ aggregation

def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def long_rows(records: Iterable[dict]) -> list[dict]:
    """One row per (dataset, method, seed, numeric test metric)."""
    rows = []
    for rec in records:
        for metric, value in rec["test"].items():
            v = _number(value)
            if v is not None:
                rows.append({"dataset": str(rec["dataset"]), "method": str(rec["method"]), "seed": int(rec["seed"]),
                             "metric": metric, "value": v})
    rows.sort(key=lambda r: (r["dataset"], r["method"], r["metric"], r["seed"]))
    return rows


def summarize(rows: Iterable[dict]) -> list[dict]:
    """Mean and sample std (ddof=1) over seeds; NaN values (e.g. AUROC of a one-class split) are left out."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], r["metric"]), []).append(r["value"])
    out = []
    for (dataset, method, metric), values in sorted(groups.items()):
        v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
        n = len(v)
        mean = float(v.mean()) if n else float("nan")
        std = float(v.std(ddof=1)) if n > 1 else float("nan")
        out.append({"dataset": dataset, "method": method, "metric": metric, "mean": mean, "std": std, "n_seeds": n})
    return out


# ----------------------------------------------------------------------------------- paired comparisons

PRETRAINED = "full"
SCRATCH = "scratch"
# metrics.json "method" of the baselines (pipeline.train.classical / deep_baselines): no pretraining involved
BASELINES = ("logreg-bandpower", "raw_logreg", "tangent_logreg", "eegnet", "shallow_fbcsp", "labram_scratch",
             "cbramod_scratch")
PAIRED_NOTE = ("Paired differences: per seed, the pretrained model's (`full`) test metric minus the other method's "
               "at the same seed (same split; the seed sets initialisation and data order), then the mean over "
               "seeds with a 95 % Student-t interval (n − 1 degrees of freedom; none for one seed). \"best "
               "baseline\" is the baseline with the highest mean *validation* primary metric on that dataset, so "
               "the test split chooses nothing. An interval that excludes 0 is a gain (or loss) beyond seed noise; "
               "it says nothing about variation across splits.")


def _by_seed(records: list[dict], dataset: str, method: str, split: str = "test") -> dict[int, dict]:
    return {int(r["seed"]): r[split] for r in records if str(r["dataset"]) == dataset and str(r["method"]) == method}


def best_baseline(records: list[dict], dataset: str) -> str | None:
    """The baseline with the highest mean validation primary metric on `dataset` (None when none ran)."""
    best, best_value = None, -math.inf
    for method in BASELINES:
        runs = [r for r in records if str(r["dataset"]) == dataset and str(r["method"]) == method]
        values = [_number(r.get("val", {}).get(r.get("primary_metric", "balanced_accuracy"))) for r in runs]
        values = [v for v in values if v is not None and math.isfinite(v)]
        if values and float(np.mean(values)) > best_value:
            best, best_value = method, float(np.mean(values))
    return best


def paired_difference(a: dict[int, dict], b: dict[int, dict], metric: str) -> dict | None:
    """Mean of a − b over the seeds both have (finite values), with a 95 % t-interval; None without a common seed."""
    from scipy import stats

    diffs = [a[s][metric] - b[s][metric] for s in sorted(set(a) & set(b))
             if _number(a[s].get(metric)) is not None and _number(b[s].get(metric)) is not None
             and math.isfinite(a[s][metric]) and math.isfinite(b[s][metric])]
    if not diffs:
        return None
    d = np.asarray(diffs, dtype=np.float64)
    mean, n = float(d.mean()), len(d)
    if n < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "n_seeds": n}
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n_seeds": n}


def paired_rows(records: list[dict], views: list["_DatasetView"]) -> list[dict]:
    rows = []
    for v in views:
        full = _by_seed(records, v.name, PRETRAINED)
        if not full:
            continue
        others = [("scratch", SCRATCH)]
        best = best_baseline(records, v.name)
        if best is not None:
            others.append(("best baseline", best))
        for comparison, method in others:
            other = _by_seed(records, v.name, method)
            for metric in v.metrics:
                diff = paired_difference(full, other, metric)
                if diff is not None:
                    rows.append({"dataset": v.name, "comparison": f"{PRETRAINED} − {comparison}", "against": method,
                                 "metric": metric, **diff})
    return rows


def format_difference(row: dict) -> str:
    if not math.isfinite(row["lo"]):
        return f"{row['mean']:+.4f} (n = 1)"
    return f"{row['mean']:+.4f} [{row['lo']:+.4f}, {row['hi']:+.4f}]"


# ---------------------------------------------------------------------------------------------- output

def _csv(rows: list[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns])
    return buf.getvalue()


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def format_cell(mean: float | None, std: float | None, n: int | None) -> str:
    """"0.8140 ± 0.0019"; a single seed (or an unreported std) shows "± n/a"; a missing value "—"."""
    if mean is None or not math.isfinite(mean):
        return "—"
    if n == 1 or std is None or not math.isfinite(std):
        return f"{mean:.4f} ± n/a"
    return f"{mean:.4f} ± {std:.4f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


@dataclass
class _DatasetView:
    name: str
    title: str
    task: str
    metrics: tuple[str, ...]
    ours: dict[str, dict[str, dict]]          # method → metric → summary row
    n_runs: dict[str, int]                     # method → number of seeds found
    published: tuple[PublishedRow, ...]


def _views(records: list[dict], summary: list[dict], paper: dict[str, PaperDataset],
           datasets: Sequence[str] | None) -> list[_DatasetView]:
    tasks: dict[str, str] = {}
    n_runs: dict[str, dict[str, int]] = {}
    for rec in records:
        ds, task = str(rec["dataset"]), rec["task"]
        if tasks.setdefault(ds, task) != task:
            raise ValueError(f"dataset {ds} mixes tasks {tasks[ds]!r} and {task!r} ({rec['_path']})")
        n_runs.setdefault(ds, {}).setdefault(str(rec["method"]), 0)
        n_runs[ds][str(rec["method"])] += 1
    names = list(datasets) if datasets else sorted(tasks)
    views = []
    for ds in names:
        pub = paper.get(ds)
        task = tasks.get(ds) or (pub.task if pub else None)
        if task is None:
            log.warning("tables: dataset %s has neither results nor published numbers; skipped", ds)
            continue
        if ds not in tasks:
            log.warning("tables: no results for %s under the root; its table holds published rows only", ds)
        if pub and pub.task and pub.task != task:
            raise ValueError(f"dataset {ds}: this run's task is {task!r} but paper_tables.yaml says {pub.task!r}")
        metrics = pub.metrics if pub and pub.metrics else TASK_METRICS[task]
        ours: dict[str, dict[str, dict]] = {}
        for s in summary:
            if s["dataset"] == ds:
                ours.setdefault(s["method"], {})[s["metric"]] = s
        views.append(_DatasetView(ds, pub.title if pub else ds, task, tuple(metrics), ours, n_runs.get(ds, {}),
                                  pub.rows if pub else ()))
    return views


def _dataset_table(v: _DatasetView) -> str:
    header = ["Method", "Seeds", *(METRIC_LABELS[m] for m in v.metrics), "Source"]
    body = []
    for method in sorted(v.ours):
        cells = [format_cell(s["mean"], s["std"], s["n_seeds"]) if (s := v.ours[method].get(m)) else "—"
                 for m in v.metrics]
        body.append([_md(method), str(v.n_runs.get(method, 0)), *cells, "this run"])
    for row in v.published:
        cells = [format_cell(row.values[m][0], row.values[m][1], row.n_seeds) if m in row.values else "—"
                 for m in v.metrics]
        body.append([f"{_md(row.method)} (published)", str(row.n_seeds or "—"), *cells, _md(row.source)])
    return _table(header, body)


def combined_rows(views: list[_DatasetView]) -> tuple[list[str], list[list[str]]]:
    """The all-datasets table as plain text cells (header, body): this run's methods, then the published ones."""
    header = ["Method"]
    for v in views:
        header += [f"{v.title}: seeds", *(f"{v.title}: {METRIC_LABELS[m]}" for m in v.metrics)]
    header.append("Source")
    body = []
    for method in sorted({m for v in views for m in v.ours}):
        row = [method]
        for v in views:
            stats = v.ours.get(method, {})
            row.append(str(v.n_runs.get(method, 0)) if method in v.n_runs else "—")
            row += [format_cell(s["mean"], s["std"], s["n_seeds"]) if (s := stats.get(m)) else "—" for m in v.metrics]
        body.append(row + ["this run"])
    published = list(dict.fromkeys(r.method for v in views for r in v.published))
    for method in published:
        row, sources = [f"{method} (published)"], []
        for v in views:
            pub = next((r for r in v.published if r.method == method), None)
            row.append(str(pub.n_seeds or "—") if pub else "—")
            row += [format_cell(pub.values[m][0], pub.values[m][1], pub.n_seeds) if pub and m in pub.values else "—"
                    for m in v.metrics]
            if pub and pub.source not in sources:
                sources.append(pub.source)
        body.append(row + ["; ".join(sources)])
    return header, body


def seed_rows(records: list[dict], views: list[_DatasetView]) -> tuple[list[str], list[list[str]]]:
    """Every run on its own row: dataset, method, seed, the epoch chosen on validation, its test metrics (the
    datasets' metrics in order; "—" where a dataset has none of that name)."""
    metrics = list(dict.fromkeys(m for v in views for m in v.metrics))
    header = ["Dataset", "Method", "Seed", "Chosen epoch", *(f"{METRIC_LABELS[m]} (test)" for m in metrics)]
    body = []
    for v in views:
        for r in sorted((r for r in records if str(r["dataset"]) == v.name), key=lambda r: (str(r["method"]),
                                                                                            int(r["seed"]))):
            values = [_number(r["test"].get(m)) if m in v.metrics else None for m in metrics]
            epoch = r.get("best_epoch")
            body.append([v.title, str(r["method"]), str(r["seed"]), "—" if epoch is None else str(epoch),
                         *("—" if x is None or not math.isfinite(x) else f"{x:.4f}" for x in values)])
    return header, body


def paired_table_rows(rows: list[dict], views: list[_DatasetView]) -> tuple[list[str], list[list[str]]]:
    header = ["Dataset", "Comparison", "Against", "Seeds", "Metric", "Mean difference [95 % CI]"]
    titles = {v.name: v.title for v in views}
    body = [[titles[r["dataset"]], r["comparison"], r["against"], str(r["n_seeds"]), METRIC_LABELS[r["metric"]],
             format_difference(r)] for r in rows]
    return header, body


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    return _table([_md(h) for h in header], [[_md(c) for c in row] for row in body])


def _provenance(root: Path, records: list[dict], paper_path: Path | None, lit=lambda s: f"`{s}`") -> str:
    """Where the numbers came from, one sentence; `lit` marks up a literal (Markdown by default)."""
    run = root.parent.name if root.name == "finetune" else root.name
    pretrained = sorted({str(r.get("pretrained")) for r in records if r.get("pretrained")})
    text = (f"Generated by {lit('python -m pipeline tables')} from {lit(root)} (run {lit(run)}, {len(records)} "
            f"metrics.json{'; pretrained: ' + ', '.join(lit(p) for p in pretrained) if pretrained else ''})")
    if paper_path is not None:
        digest = hashlib.sha256(paper_path.read_bytes()).hexdigest()[:12]
        # its name and content, not its checkout path: the same tables from any checkout
        text += f" with published numbers from {lit(paper_path.name)} (sha256 {digest})"
    return text + "."


def quality_lines(quality: dict[str, str], views: list[_DatasetView]) -> list[tuple[str, str]]:
    """(dataset title, note) per dataset with stage summaries, in the tables' dataset order."""
    titles = {v.name: v.title for v in views}
    order = [v.name for v in views] + [d for d in quality if d not in titles]
    return [(titles.get(d, d), quality[d]) for d in order if d in quality]


def write_tables(root: str | Path, out: str | Path, *, paper: str | Path | None = None,
                 datasets: Sequence[str] | None = None, quality: dict[str, Sequence[Path]] | None = None
                 ) -> dict[str, Path]:
    """Gather the metrics under `root` and write results.csv, summary.csv, results.md, table.md, table.rst, paired.csv,
    results.png and finetune_curves.png into `out`. `quality`: dataset → its stages' quality summaries (JSON), which
    become the tables' data-quality footnotes."""
    from pipeline.eval.plots import plot_finetune_curves, plot_results
    from pipeline.eval.quality_notes import dataset_notes
    from pipeline.eval.report_page import landing_rst

    root, out = Path(root), Path(out)
    paper_path = Path(paper) if paper is not None else None
    records = collect_metrics(root)
    if datasets:
        records = [r for r in records if str(r["dataset"]) in set(datasets)]
    if not records:
        wanted = f" for datasets {list(datasets)}" if datasets else ""
        raise FileNotFoundError(f"no metrics.json with test metrics under {root}{wanted}; run the finetune stage first")
    published = load_paper_tables(paper_path) if paper_path is not None else {}
    rows = long_rows(records)
    summary = summarize(rows)
    views = _views(records, summary, published, datasets)
    data_quality = quality_lines(dataset_notes(quality or {}), views)
    for title, note in data_quality:
        log.info("tables: data quality of %s: %s", title, note)

    head = f"_{_provenance(root, records, paper_path)}_"
    paired = paired_rows(records, views)
    notes = [SEED_NOTE] + ([PUBLISHED_NOTE] if any(v.published for v in views) else []) + \
        ([PAIRED_NOTE] if paired else [])
    # the tables as text cells, once: Markdown (table.md, results.md) and reStructuredText (table.rst) are views
    combined, seeds = combined_rows(views), seed_rows(records, views)
    paired_cells = paired_table_rows(paired, views) if paired else None
    md_notes = "\n".join([f"- {n}" for n in notes] + [f"- Data quality, {_md(t)}: {_md(q)}" for t, q in data_quality])
    paired_md = [f"## Paired differences\n\n{_md_table(*paired_cells)}"] if paired_cells else []
    sections = [f"## {_md(v.title)}{'' if v.title != v.name else f' ({v.task})'}\n\n{_dataset_table(v)}"
                for v in views]
    seeds_md = f"## Every seed\n\n{_md_table(*seeds)}"
    results_md = "\n\n".join(["# Downstream results", head, *sections, *paired_md, seeds_md, md_notes]) + "\n"
    table_md = "\n\n".join(["# Downstream results, all datasets", head, _md_table(*combined), *paired_md,
                             md_notes]) + "\n"
    table_rst = landing_rst(headline=combined, quality=data_quality, notes=notes, paired=paired_cells, seeds=seeds,
                            provenance=_provenance(root, records, paper_path, lit=lambda s: f"``{s}``"))

    paths = {name: out / name for name in ("results.csv", "summary.csv", "results.md", "table.md", "table.rst",
                                           "paired.csv", "results.png", "finetune_curves.png")}
    write_text_atomic(paths["paired.csv"], _csv(paired, ["dataset", "comparison", "against", "metric", "mean", "lo",
                                                         "hi", "n_seeds"]))
    write_text_atomic(paths["results.csv"], _csv(rows, ["dataset", "method", "seed", "metric", "value"]))
    write_text_atomic(paths["summary.csv"], _csv(summary, ["dataset", "method", "metric", "mean", "std", "n_seeds"]))
    titles = {v.name: v.title for v in views}
    plot_results(summary, paths["results.png"], rows=rows, titles=titles)
    plot_finetune_curves(curve_runs(records), paths["finetune_curves.png"], titles=titles)
    write_text_atomic(paths["results.md"], results_md)
    write_text_atomic(paths["table.rst"], table_rst)
    write_text_atomic(paths["table.md"], table_md)
    log.info("tables: %d runs over %d datasets → %s", len(records), len(views), out)
    return paths


def curve_runs(records: list[dict]) -> list[dict]:
    """The trained runs' logged curves (`metrics.jsonl` beside their metrics.json; the classical baselines fit in one
    go and log none): {dataset, method, seed, metric, records}."""
    from pipeline.store.jsonl import read_records

    runs = []
    for rec in records:
        log_path = Path(rec["_path"]).with_name("metrics.jsonl")
        if log_path.is_file():
            runs.append({"dataset": str(rec["dataset"]), "method": str(rec["method"]), "seed": int(rec["seed"]),
                         "metric": rec.get("primary_metric", "balanced_accuracy"), "records": read_records(log_path)})
    return runs
