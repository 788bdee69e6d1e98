"""What a person sees: the Snakemake report of the finished tiny DAG opened in headless Chromium (the results table,
its footnotes, per-seed results and captioned figures on the page the report opens on), and the tables' data-quality
footnotes from the stage summaries of real stage runs."""

from __future__ import annotations

import argparse
import csv
import html
import json
import re
from pathlib import Path

import pytest

from browser import dump_dom, screenshot
from workflow_helpers import TEST_RESULTS, Finished, snakemake, tail

# Appended to a copy of the report: once the page has rendered, the browser itself reads back what the landing
# view shows (texts, where the tables sit, whether the figures decoded) into <pre id="probe">.
PROBE = """
<script>
function probe() {
  const box = (el) => { const r = el.getBoundingClientRect(); return {top: r.top, left: r.left, bottom: r.bottom}; };
  const table = (cls) => { const t = document.querySelector("table." + cls);
                           return t ? {rows: Array.from(t.rows, r => Array.from(r.cells, c => c.innerText.trim())),
                                       box: box(t)} : null; };
  const page = document.querySelector(".document");
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    viewport: {width: innerWidth, height: innerHeight},
    title: page ? page.querySelector("h1").innerText : null,
    text: page ? page.innerText : "",
    tables: {results: table("results-table"), paired: table("paired-table"), seeds: table("seeds-table")},
    figures: Array.from(document.querySelectorAll("img.results-figure"),
                        img => ({alt: img.alt, src: img.src.slice(0, 22), width: img.naturalWidth, box: box(img)})),
    captions: Array.from(document.querySelectorAll(".figure-caption"), c => c.innerText.trim()),
    graph: document.querySelectorAll("canvas, svg").length,
  });
  document.body.appendChild(probe);
}
// the report renders with React after load: wait (in the browser's virtual time) until the page is there
let waited = 0;
const poll = setInterval(() => {
  waited += 100;
  if (document.querySelector(".document h1") || waited > 8000) { clearInterval(poll); setTimeout(probe, 300); }
}, 100);
</script>
"""


def _read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _probe(report: Path, tmp: Path) -> dict:
    page = tmp / "probe.html"
    head, body_end, rest = report.read_text().rpartition("</body>")  # the last one: scripts may hold the string
    page.write_text(head + PROBE + body_end + rest)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dump_dom(page, tmp), re.S)
    assert found, "the probe found no rendered page (did the report's scripts run?)"
    return json.loads(html.unescape(found.group(1)))


def _report_results(report: Path) -> dict:
    """The report's own record of its files (path → name, caption, mime type…), from its `var results = …;`."""
    found = re.search(r"var results = (\{.*?\});\n", report.read_text(), re.S)
    assert found, "no `var results` in the report"
    return json.loads(found.group(1))


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_dag")  # the worker that holds the finished DAG
def test_the_report_opens_on_the_results(finished: Finished, tmp_path: Path):
    tables = finished.workdir / TEST_RESULTS / "tables"
    report = tmp_path / "report.html"
    proc = snakemake(finished.workdir, finished.config, "all", "--report", str(report))
    assert proc.returncode == 0, tail(proc)
    view = _probe(report, tmp_path)
    try:
        # the landing view: the table first, in the first screenful, beside the rule graph
        assert view["title"] == "Downstream results"
        results = view["tables"]["results"]
        assert results is not None, "no results table on the page the report opens on"
        assert 0 <= results["box"]["top"] < view["viewport"]["height"] / 3, results["box"]
        assert view["graph"] > 0  # Snakemake's rule graph is still there, after the results
        # every mean ± std of summary.csv, in its method's row
        rows = {r[0]: " | ".join(r) for r in results["rows"][1:]}
        summary = _read_csv(tables / "summary.csv")
        assert {r["method"] for r in summary} == set(rows)
        for r in summary:
            assert f"{float(r['mean']):.4f} ± {float(r['std']):.4f}" in rows[r["method"]], (r, rows[r["method"]])
        # every seed's test value (results.csv), one row per run
        seeds = view["tables"]["seeds"]["rows"]
        header, body = seeds[0], {(r[1], r[2]): r for r in seeds[1:]}
        long = _read_csv(tables / "results.csv")
        assert len(body) == len({(r["method"], r["seed"]) for r in long}) == 6
        labels = {"balanced_accuracy": "Balanced Acc. (test)", "auroc": "AUROC (test)", "auc_pr": "AUC-PR (test)"}
        for r in long:
            assert body[(r["method"], r["seed"])][header.index(labels[r["metric"]])] == f"{float(r['value']):.4f}"
        assert view["tables"]["paired"] is not None
        # the data-quality footnote, with the window count of the samples' own quality section
        quality = json.loads((finished.workdir / TEST_RESULTS / "demo_bids" / "samples" / "quality.json").read_text())
        kept = sum(n for classes in quality["windows"].values() for n in classes.values())
        assert (f"demo_bids: no channel dropped or padded; no window dropped by the amplitude/NaN rules "
                f"({kept:,} kept)".replace(",", " ")) in view["text"]
        # both figures inline (decoded PNGs), each with its caption
        assert [f["alt"] for f in view["figures"]] == ["results.png", "finetune_curves.png"]
        assert all(f["src"] == "data:image/png;base64," and f["width"] > 300 for f in view["figures"])
        assert [c.split(":")[0] for c in view["captions"]] == ["results.png", "finetune_curves.png"]
        assert all(len(c) > 80 for c in view["captions"])
        assert view["figures"][0]["box"]["top"] > results["box"]["bottom"]  # the table comes first
    except AssertionError as exc:  # a picture of what the person would have seen, beside the reason
        shot = screenshot(report, tmp_path / "landing.png", tmp_path)
        raise AssertionError(f"{exc}\n(the landing view: {shot})") from exc
    # every file in the report has a caption, and the categories hold what they should
    entries = _report_results(report)
    assert {e["name"] for e in entries.values()} >= {"table.md", "summary.csv", "results.csv", "paired.csv",
                                                     "results.png", "finetune_curves.png", "loss.png",
                                                     "codebook_usage.png", "reconstructions.png", "accuracy.png"}
    assert all(e["caption"].strip() for e in entries.values()), [p for p, e in entries.items() if not e["caption"]]
    assert "ddrvq-demo" in next(e["caption"] for e in entries.values() if e["name"] == "reconstructions.png")


def test_table_footnotes_carry_the_stage_summaries_of_real_stage_runs(tmp_path: Path):
    """Standardize's and the samples' quality sections, written by the stages on a user's trial files (3 `left` test
    trials with an eye-movement deflection, one recording with an unknown channel), end up as the dataset's
    footnote in table.md, results.md and the report's table.rst."""
    import numpy as np

    from pipeline.stages import tables as tables_stage
    from test_eval import _write_run
    from test_own_data import build, write_trials

    src = tmp_path / "src"
    write_trials(src / "s01.npz", "s01", seed=1)
    x = write_trials(src / "s02.npz", "s02", seed=2, channels=("C3", "Cz", "C4", "X1"))
    x[[0, 2, 4], 1, 100:110] += 3000.0
    np.savez(src / "s02.npz", X=x, y=np.array(["left", "right"] * 16), ch_names=np.array(["C3", "Cz", "C4", "X1"]),
             sfreq=200.0, subject="s02")
    data = tmp_path / "mine"
    build(src, data)
    root = tmp_path / "finetune"
    for seed in (0, 1):
        _write_run(root, "mine", "scratch", seed, "binary", {"balanced_accuracy": 0.6 + seed / 10, "auroc": 0.7,
                                                            "auc_pr": 0.7})
    parser = argparse.ArgumentParser()
    tables_stage.add_arguments(parser)
    out = tmp_path / "tables"
    tables_stage.main(parser.parse_args([str(root), "--out", str(out), "--quality",
                                         f"mine={data / 'montage_quality.json'}",
                                         f"mine={data / 'samples' / 'quality.json'}"]))
    # s01 has 4 of the 19 targets, s02 3 (X1 is no 10-20 name); 32 windows each, the 3 deflected ones dropped
    note = ("16 target channel(s) padded (zero + masked) in 2 recording(s): F3, F4, F7, F8, Fp1, Fp2, … 10 more; "
            "1 source channel(s) dropped in 1 recording(s): X1 (unknown-name); "
            "3 of 64 windows dropped by the amplitude/NaN rules (test 3 of 32: left 3)")
    table = (out / "table.md").read_text()
    assert f"- Data quality, mine: {note}" in table
    assert f"- Data quality, mine: {note}" in (out / "results.md").read_text()
    assert f"- mine: {note}" in (out / "table.rst").read_text().replace("\\", "")
    # a summary that is missing says so instead of leaving the table looking clean
    tables_stage.main(parser.parse_args([str(root), "--out", str(out), "--quality",
                                         f"mine={data / 'nowhere.json'}"]))
    assert "no quality summary at" in (out / "table.md").read_text()


def _every_text_inside(fig) -> list[str]:
    """What of a drawn figure reaches past its edges (a cut-off title, a tick label off the canvas): the texts
    outside, or the drawn artists' bounding box when it is wider than the figure but no single text is named."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer)  # inches, of what is drawn (ticks outside the view limits are not)
    width, height = fig.get_size_inches()
    if drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01:
        return []
    px_w, px_h = fig.canvas.get_width_height()
    outside = []
    for text in [*fig.texts, *(ax.title for ax in fig.axes)]:
        box = text.get_window_extent(renderer)
        if isinstance(text, Text) and text.get_text() and (box.x0 < 0 or box.x1 > px_w or box.y1 > px_h):
            outside.append(text.get_text())
    return outside or [f"drawn area {drawn} beyond the figure's {width:.2f} × {height:.2f} in"]


@pytest.mark.parametrize("datasets, methods", [(["demo_bids"], ["full", "logreg-bandpower", "scratch"]),
                                               (["tuab", "tuev"], ["full", "scratch", "logreg-bandpower", "raw_logreg",
                                                                   "tangent_logreg", "eegnet", "shallow_fbcsp",
                                                                   "labram_scratch", "cbramod_scratch"])])
def test_results_png_shows_its_whole_title(tmp_path: Path, monkeypatch, datasets, methods):
    """results.png of one dataset cut its title off at both sides (a 4.5-inch figure under a 7-inch title)."""
    from matplotlib.figure import Figure

    from pipeline.eval.plots import plot_results

    saved, save = [], Figure.savefig

    def check_then_save(fig, *args, **kwargs):
        saved.append(_every_text_inside(fig))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", check_then_save)
    summary = [{"dataset": ds, "method": m, "metric": "balanced_accuracy", "mean": 0.6, "std": 0.02, "n_seeds": 3}
               for ds in datasets for m in methods]
    plot_results(summary, tmp_path / "results.png")
    assert saved == [[]], f"cut off: {saved}"
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_finetune_curves_from_the_runs_logs(tmp_path: Path):
    """finetune_curves.png: every trained run's metrics.jsonl (per-step loss, per-epoch held-out scores) in one
    figure, a row per dataset; the classical baselines (no metrics.jsonl) are left out; no text off the canvas."""
    from pipeline.eval.plots import finetune_curves_figure
    from pipeline.eval.tables import collect_metrics, curve_runs
    from test_eval import _write_run

    root = tmp_path / "finetune"
    for ds in ("tuab", "tuev"):
        for method in ("full", "scratch", "logreg"):
            for seed in (0, 1):
                path = _write_run(root, ds, method, seed, "binary", {"balanced_accuracy": 0.7, "auroc": 0.8})
                if method == "logreg":
                    continue
                log = [{"kind": "train", "step": s, "epoch": s // 10, "losses": {"loss": 1 / s}} for s in range(1, 31)]
                log += [{"kind": "heldout", "step": 10 * e, "epoch": e, "val": {"balanced_accuracy": 0.5 + e / 10},
                         "test": {"balanced_accuracy": 0.5 + e / 20}} for e in (1, 2, 3)]
                path.with_name("metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    runs = curve_runs(collect_metrics(root))
    assert sorted((r["dataset"], r["method"], r["seed"]) for r in runs) == [
        (ds, m, s) for ds in ("tuab", "tuev") for m in ("full", "scratch") for s in (0, 1)]
    fig = finetune_curves_figure(runs, titles={"tuab": "TUAB (abnormal, 2-class)"})
    assert fig.axes[0].get_title() == "TUAB (abnormal, 2-class): training loss" and len(fig.axes) == 4
    assert len(fig.axes[1].lines) == 4 * 3  # per run: val, test, the chosen epoch's star
    assert _every_text_inside(fig) == []


def test_table_rst_renders_without_docutils_warnings(tmp_path: Path):
    """The landing page's table.rst, with published rows (sources full of parentheses, colons, commas) and odd
    method names, is valid reStructuredText: docutils raises on its first warning here."""
    from docutils.core import publish_parts

    from pipeline.eval.tables import write_tables
    from test_eval import PAPER, _fake_tree, _write_run

    root = tmp_path / "finetune"
    _fake_tree(root)
    for seed in range(3):  # names with rst markup characters: underscores, a star, a pipe
        _write_run(root, "tuab", "raw_logreg*|x", seed, "binary", {"balanced_accuracy": 0.7, "auroc": 0.7,
                                                                   "auc_pr": 0.7})
    write_tables(root, tmp_path / "tables", paper=PAPER)
    text = (tmp_path / "tables" / "table.rst").read_text()
    body = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]
    assert "raw_logreg*|x" in html.unescape(body) and "LaBraM-Base (published)" in body
    assert body.count("<table") == 2  # the headline and every seed (no `full` run here: no paired differences)
    # the published numbers by name and content, not by this checkout's path (the same tables from any checkout)
    md = (tmp_path / "tables" / "table.md").read_text()
    assert f"from `{PAPER.name}` (sha256" in md and str(PAPER.parent) not in md
