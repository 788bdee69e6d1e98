"""PNG plots a person would look at: training curves, codebook usage, reconstructions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_losses(records: list[dict], path: Path, *, key: str = "losses", title: str = "training loss") -> None:
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        return
    steps = [r["step"] for r in train]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for term in train[0][key]:
        ax.plot(steps, [r[key][term] for r in train], label=term, lw=1.5 if term == "loss" else 1)
    ax.set(xlabel="step", ylabel="loss", title=title, yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_codebook_usage(records: list[dict], path: Path, domains: list[str]) -> None:
    train = [r for r in records if r.get("kind") == "train" and "usage" in r]
    if not train:
        return
    steps = [r["step"] for r in train]
    usage = np.array([r["usage"] for r in train])  # [steps, domains, levels]
    ppl = np.array([r["perplexity"] for r in train])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for d, dom in enumerate(domains):
        for lvl in range(usage.shape[2]):
            style = dict(label=f"{dom} L{lvl}", ls=["-", "--", ":", "-."][d % 4])
            axes[0].plot(steps, usage[:, d, lvl], **style)
            axes[1].plot(steps, ppl[:, d, lvl], **style)
    axes[0].set(xlabel="step", ylabel="fraction of codes used per batch", title="codebook usage")
    axes[1].set(xlabel="step", ylabel="perplexity", title="code perplexity per level", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reconstructions(x: np.ndarray, waveform: np.ndarray, labels: list[str], path: Path, *,
                         sfreq: float = 200.0, title: str = "held-out patches") -> None:
    """x, waveform [n, T]: original vs reconstruction, in time and as amplitude spectra."""
    n = len(x)
    fig, axes = plt.subplots(n, 2, figsize=(11, 1.9 * n), squeeze=False)
    t = np.arange(x.shape[-1]) / sfreq
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / sfreq)
    for i in range(n):
        axes[i, 0].plot(t, x[i], color="k", lw=1, label="original")
        axes[i, 0].plot(t, waveform[i], color="tab:red", lw=1, label="reconstruction")
        axes[i, 0].set_ylabel(labels[i], fontsize=7)
        axes[i, 1].semilogy(freqs, np.abs(np.fft.rfft(x[i])) + 1e-6, color="k", lw=1)
        axes[i, 1].semilogy(freqs, np.abs(np.fft.rfft(waveform[i])) + 1e-6, color="tab:red", lw=1)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[0, 0].set_title("waveform (µV/100)")
    axes[0, 1].set_title("amplitude spectrum")
    axes[-1, 0].set_xlabel("s")
    axes[-1, 1].set_xlabel("Hz")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_level_accuracy(records: list[dict], path: Path, domains: list[str]) -> None:
    """Masked-token accuracy per level, one column per domain. Top: held-out accuracy of the model's own
    coarse-to-fine predictions (level k conditioned on its predicted levels < k: what inference gives).
    Bottom: teacher-forced accuracy (true lower-level codes given), training per logged step and held-out.
    Dotted: the held-out frequency of each level's most common code."""
    train = [r for r in records if r.get("kind") == "train" and "accuracy" in r]
    held = [r for r in records if r.get("kind") == "heldout" and "accuracy" in r]
    if not train:
        return
    acc = np.array([r["accuracy"] for r in train])  # [steps, domains, levels]
    steps = [r["step"] for r in train]
    hs = [r["step"] for r in held]
    fig, axes = plt.subplots(2, len(domains), figsize=(5.5 * len(domains), 7), squeeze=False, sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for s, dom in enumerate(domains):
        top, bottom = axes[0, s], axes[1, s]
        for lvl in range(acc.shape[2]):
            c = colors[lvl % len(colors)]
            if held:
                top.plot(hs, [r["accuracy_inference"][dom][lvl] for r in held], "o-", color=c, ms=4, label=f"L{lvl}")
                bottom.plot(hs, [r["accuracy"][dom][lvl] for r in held], "o-", color=c, ms=4, label=f"L{lvl} held-out")
                for ax in (top, bottom):
                    ax.axhline(held[-1]["majority"][dom][lvl], color=c, ls=":", lw=1)
            bottom.plot(steps, acc[:, s, lvl], color=c, lw=1, alpha=0.6, label=f"L{lvl} train")
        top.set(ylabel="held-out accuracy", title=f"{dom} codes: predicted coarse to fine", ylim=(0, None))
        bottom.set(xlabel="step", ylabel="masked-token accuracy", title=f"{dom} codes: lower levels given (teacher forcing)",
                   ylim=(0, None))
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle("per-level code accuracy on masked patches (dotted: most common code's frequency)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _wrapped_title(fig, text: str) -> None:
    """A figure title wrapped to the figure's width (≈ 9 characters an inch at 12 pt), so none is cut off."""
    fig.suptitle(textwrap.fill(text, width=max(20, int(fig.get_figwidth() * 9))))


def plot_results(summary: list[dict], path: Path, **kwargs) -> None:
    """results_figure(summary, **kwargs) as a PNG (nothing when no dataset has the metric)."""
    fig = results_figure(summary, **kwargs)
    if fig is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)


def results_figure(summary: list[dict], *, metric: str = "balanced_accuracy", rows: list[dict] | None = None,
                   titles: dict[str, str] | None = None):
    """One panel per dataset: each method's mean ± std (over seeds) of `metric` as a bar, every seed's value as a
    dot (`rows`: the long per-seed rows), the seeds counted under each method. The figure grows with the methods
    and datasets, and its title wraps to its width."""
    datasets = sorted({r["dataset"] for r in summary if r["metric"] == metric})
    if not datasets:
        return None
    per_ds = {ds: [r for r in summary if r["dataset"] == ds and r["metric"] == metric] for ds in datasets}
    widths = [max(3.0, 0.75 * len(per_ds[ds]) + 1.2) for ds in datasets]
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(6.5, sum(widths)), 4.4), squeeze=False,
                             width_ratios=widths, layout="constrained")
    for ax, ds in zip(axes[0], datasets):
        stats = per_ds[ds]
        means = [float(r["mean"]) for r in stats]
        stds = [float(r["std"]) if r["std"] not in (None, "") and np.isfinite(float(r["std"])) else 0.0 for r in stats]
        ax.bar(range(len(stats)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.55, label="mean ± std")
        for i, r in enumerate(stats):
            seeds = [s["value"] for s in rows or () if s["dataset"] == ds and s["method"] == r["method"]
                     and s["metric"] == metric and np.isfinite(s["value"])]
            if seeds:
                offsets = np.linspace(-0.18, 0.18, len(seeds)) if len(seeds) > 1 else [0.0]
                ax.plot(i + np.asarray(offsets), seeds, "o", color="k", ms=3.5,
                        label="one seed" if i == 0 else None)
        many = len(stats) > 4
        ax.set_xticks(range(len(stats)), [f"{r['method']}\n(n={r['n_seeds']})" for r in stats], fontsize=8,
                      rotation=35 if many else 0, ha="right" if many else "center")
        ax.axhline(0.5 if metric == "balanced_accuracy" else 0.0, color="k", lw=0.8, ls=":")
        ax.set(title=(titles or {}).get(ds, ds), ylabel=metric.replace("_", " "), ylim=(0, 1))
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    _wrapped_title(fig, f"Downstream test {metric.replace('_', ' ')}: bars mean ± std over seeds, dots single "
                        "seeds (model selected on validation; dotted: chance)")
    return fig


def plot_finetune_curves(runs: list[dict], path: Path, **kwargs) -> None:
    """finetune_curves_figure(runs, **kwargs) as a PNG; without a logged run, a figure that says so (the workflow
    declares the file, and a run of classical baselines alone has no curve to draw)."""
    fig = finetune_curves_figure(runs, **kwargs)
    if fig is None:
        fig = plt.figure(figsize=(8, 1.5))
        fig.text(0.5, 0.5, "No fine-tuning curves: no trained method in this run\n(the classical baselines fit in one "
                 "step and log none)", ha="center", va="center")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finetune_curves_figure(runs: list[dict], *, titles: dict[str, str] | None = None):
    """Fine-tuning curves from the runs' metrics.jsonl (`runs`: {dataset, method, seed, metric, records}), one row
    per dataset: training loss per step, and the validation selection metric per epoch with the test value beside
    it; every seed is a line in its method's colour, its chosen epoch (best validation) a star."""
    from matplotlib.ticker import MaxNLocator

    datasets = sorted({r["dataset"] for r in runs})
    if not datasets:
        return None
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets) + 0.6), squeeze=False,
                             layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, ds in zip(axes, datasets):
        loss_ax, metric_ax = row
        mine = sorted((r for r in runs if r["dataset"] == ds), key=lambda r: (r["method"], r["seed"]))
        methods = list(dict.fromkeys(r["method"] for r in mine))
        for r in mine:
            c = colors[methods.index(r["method"]) % len(colors)]
            first = r["seed"] == min(x["seed"] for x in mine if x["method"] == r["method"])
            train = [x for x in r["records"] if x.get("kind") == "train" and "losses" in x]
            held = [x for x in r["records"] if x.get("kind") == "heldout" and r["metric"] in x.get("val", {})]
            loss_ax.plot([x["step"] for x in train], [x["losses"]["loss"] for x in train], color=c, lw=1, alpha=0.8,
                         label=r["method"] if first else None)
            if held:
                epochs = [x["epoch"] for x in held]
                metric_ax.plot(epochs, [x["val"][r["metric"]] for x in held], "o-", color=c, ms=4, lw=1,
                               label=f"{r['method']} val" if first else None)
                metric_ax.plot(epochs, [x["test"][r["metric"]] for x in held], "s--", color=c, ms=3, lw=0.8,
                               alpha=0.6, label=f"{r['method']} test" if first else None)
                best = max(held, key=lambda x: (x["val"][r["metric"]], -x["epoch"]))
                metric_ax.plot([best["epoch"]], [best["val"][r["metric"]]], "*", color=c, ms=11, mec="k", mew=0.6,
                               label="chosen epoch" if r is mine[0] else None)
        title = (titles or {}).get(ds, ds)
        metric = mine[0]["metric"].replace("_", " ")
        loss_ax.set(xlabel="step", ylabel="training loss", title=f"{title}: training loss")
        metric_ax.set(xlabel="epoch", ylabel=metric, ylim=(0, 1), title=f"{title}: {metric} per epoch")
        last = max((x["epoch"] for r in mine for x in r["records"] if x.get("kind") == "heldout"), default=1)
        metric_ax.set_xlim(0.5, last + 0.5)  # whole epochs, also for a run of one
        metric_ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
    _wrapped_title(fig, "Fine-tuning curves of the trained methods, one line per seed (the classical baselines fit "
                        "in one step and log none)")
    return fig
