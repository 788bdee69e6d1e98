"""PNG plots a person would look at: training curves, codebook usage, reconstructions."""

from __future__ import annotations

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


def plot_results(summary: list[dict], path: Path, *, metric: str = "balanced_accuracy") -> None:
    """One panel per dataset: each method's mean ± std (over seeds) of `metric`, with its seeds counted."""
    datasets = sorted({r["dataset"] for r in summary if r["metric"] == metric})
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        rows = [r for r in summary if r["dataset"] == ds and r["metric"] == metric]
        means = [float(r["mean"]) for r in rows]
        stds = [float(r["std"]) if r["std"] not in (None, "") and np.isfinite(float(r["std"])) else 0.0 for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)), [f"{r['method']}\n(n={r['n_seeds']})" for r in rows], fontsize=8)
        ax.axhline(0.5 if metric == "balanced_accuracy" else 0.0, color="k", lw=0.8, ls=":")
        ax.set(title=ds, ylabel=metric.replace("_", " "), ylim=(0, 1))
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("downstream test results (mean ± std over seeds; model selected on validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
