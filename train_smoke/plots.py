"""PNG plots of a smoke report, readable at a glance (matplotlib, Agg backend: no display needed).

- `loss.png`: training loss per shard set, main run vs the control on shuffled images;
- `ablations.png`: held-out loss under each ablation, conditioned on φ (with canaries: class-word loss vs chance);
- `gain_by_distance.png`: loss gain from the true image by distance from it (should peak right after it);
- `gates.png`: |tanh α| of every gated block over training, main vs control;
- `overview.png`: the four panels with the verdict as the title.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

PASS_COLOUR, FAIL_COLOUR = "#1a7f37", "#cf222e"
CONDITION_LABELS = {"true": "true images", "shuffled": "shuffled\nacross docs", "phi_plus_1": "φ + 1",
                    "phi_minus_1": "φ − 1", "permuted": "permuted\nin sequence", "text_only": "no images"}


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(ax, report: dict[str, Any]) -> None:
    training = report["training"]
    for label, style in (("main", "-"), ("control", "--")):
        history = training.get(label)
        if not history:
            continue
        for name, values in history["loss"].items():
            window = max(1, len(values) // 50)
            ax.plot(history["steps"][: len(values)], _smooth(values, window), style,
                    label=f"{label}: {name}", linewidth=1.4)
        probe = history.get("probe") or {}
        if "heldout_loss" in probe:
            ax.plot(history["probe_steps"], probe["heldout_loss"], style, marker="o", markersize=3,
                    label=f"{label}: held-out", linewidth=1.0)
        if "canary_class_word_loss" in probe:
            ax.plot(history["probe_steps"], probe["canary_class_word_loss"], style, marker="s", markersize=3,
                    color="#bf3989", label=f"{label}: canary class word (held-out)", linewidth=1.0)
    canary = _canary_figures(report)
    if canary is not None:
        ax.axhline(canary["chance_nats"], color="#bf8700", linestyle=":", linewidth=1.0, label="class-word chance")
    ax.set_title("loss over training (control: images shuffled)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


def _general_figures(report: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    figures = report["evaluation"]
    name = max(figures, key=lambda n: figures[n]["targets_seeing_an_image"])
    return name, figures[name]["modes"]["phi"]


def _canary_figures(report: dict[str, Any]) -> dict[str, Any] | None:
    sets = [f["modes"]["phi"]["canary"] for f in report["evaluation"].values() if f["canary_events"]]
    return max(sets, key=lambda c: c["events"]) if sets else None


def plot_ablations(ax, report: dict[str, Any]) -> None:
    canary = _canary_figures(report)
    if canary is not None:
        values = canary["class_word_loss"]
        title = f"canary class-word loss ({canary['events']} words)"
        chance = canary["chance_nats"]
    else:
        name, figures = _general_figures(report)
        values = figures["loss_where_an_image_is_seen"]
        title = f"held-out loss where an image is seen ({name})"
        chance = None
    names = [n for n in CONDITION_LABELS if values.get(n) is not None]
    colours = ["#0969da" if n == "true" else "#8c959f" for n in names]
    bars = ax.bar([CONDITION_LABELS[n] for n in names], [values[n] for n in names], color=colours)
    for bar, n in zip(bars, names):
        ax.annotate(f"{values[n]:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    if chance is not None:
        ax.axhline(chance, color="#bf8700", linestyle="--", linewidth=1.2, label=f"chance {chance:.2f}")
        ax.legend(fontsize=7)
    ax.set_title(title)
    ax.set_ylabel("loss (nats)")
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="y", alpha=0.3)


def plot_gain(ax, report: dict[str, Any]) -> None:
    name, figures = _general_figures(report)
    series = [(f"all held-out ({name})", figures["gain_by_distance"], "#0969da")]
    canary = _canary_figures(report)
    if canary is not None:
        series.append(("canary sequences", canary["gain_by_distance"], "#bf3989"))
    for label, buckets, colour in series:
        usable = [b for b in buckets if "gain" in b]
        ax.plot([b["distance"] for b in usable], [b["gain"] for b in usable], "o-", color=colour, label=label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_title("gain from the true image (shuffled − true loss)")
    ax.set_xlabel("tokens after the image")
    ax.set_ylabel("nats/token")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_gates(ax, report: dict[str, Any]) -> None:
    training = report["training"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for label, style in (("main", "-"), ("control", "--")):
        history = training.get(label)
        if not history:
            continue
        for i, (block, values) in enumerate(sorted(history["gates_xattn"].items(), key=lambda kv: int(kv[0]))):
            ax.plot(history["gate_steps"], values, style, color=colours[i % len(colours)],
                    label=f"{label}: xattn before layer {block}", linewidth=1.3)
    ax.set_title("|tanh α| of the cross-attention gates")
    ax.set_xlabel("step")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


PANELS: dict[str, Callable] = {"loss": plot_loss, "ablations": plot_ablations, "gain_by_distance": plot_gain,
                               "gates": plot_gates}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def write_plots(report: dict[str, Any], plots_dir: str, write: Callable[[str, bytes], None]) -> list[str]:
    """Every panel on its own and together; returns the written paths."""
    paths = []
    for name, panel in PANELS.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
        panel(ax, report)
        path = f"{plots_dir.rstrip('/')}/{name}.png"
        write(path, _png(fig))
        paths.append(path)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), layout="constrained")
    for ax, panel in zip(axes.flat, PANELS.values()):
        panel(ax, report)
    verdict = report["verdict"]
    colour = PASS_COLOUR if verdict["passed"] else FAIL_COLOUR
    fig.suptitle(f"m3w smoke: {verdict['status'].upper()} — {verdict['summary']}", color=colour, fontsize=11,
                 wrap=True)
    path = f"{plots_dir.rstrip('/')}/overview.png"
    write(path, _png(fig))
    paths.append(path)
    return paths
