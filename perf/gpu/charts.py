"""The GPU command's own charts, in ``charts/<device>/gpu/`` (a subfolder:
``perf.plot`` clears the device folder's PNGs when it redraws the block
charts): the training-step times behind the SE tax, and the reverse-order
speedup of the second pass against x's size in units of L2."""
from __future__ import annotations

from pathlib import Path

from .results import num, read_rows
from .summary import E2E_VARIANTS


def chart_dir(charts_dir: Path, slug: str) -> Path:
    return Path(charts_dir) / slug / "gpu"


def se_tax_figure(rows: list[dict], device: str):
    from matplotlib.figure import Figure

    ok = [r for r in rows if r.get("status") == "ok"]
    models = list(dict.fromkeys(r["model"] for r in ok))
    fig = Figure(figsize=(max(6, 1.6 * len(models) + 2), 4), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)[0]
    width = 0.8 / len(E2E_VARIANTS)
    colors = dict(zip(E2E_VARIANTS, ("tab:blue", "tab:green", "tab:purple")))
    for ax, mode in zip(axes, ("eager", "compile")):
        drawn = False
        for j, variant in enumerate(E2E_VARIANTS):
            ms = {r["model"]: num(r["ms"]) for r in ok if r["compile"] == mode and r["variant"] == variant}
            xs = [i + (j - 1) * width for i, m in enumerate(models) if m in ms]
            if xs:
                ax.bar(xs, [ms[m] for m in models if m in ms], width, label=variant, color=colors[variant])
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
        ax.set_title(mode, fontsize=10)
        ax.set_ylabel("ms per training step")
        ax.grid(axis="y", alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Training step, bf16, channels_last — {device}")
    return fig


def l2_figure(rows: list[dict], device: str):
    from matplotlib.figure import Figure

    ok = [r for r in rows if r.get("status") == "ok"]
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    l2 = max((num(r.get("l2_bytes"), 0.0) for r in ok), default=0.0)
    unit, label = (l2, "x bytes ÷ L2 size") if l2 > 0 else (2**20, "x MiB")
    for key in dict.fromkeys((r["block"], r["mode"]) for r in ok):
        sel = [r for r in ok if (r["block"], r["mode"]) == key]
        sel.sort(key=lambda r: num(r["x_bytes"]))
        ax.plot([num(r["x_bytes"]) / unit for r in sel], [num(r["reverse_speedup"]) for r in sel], marker="o",
                label=f"{key[0]} {key[1]}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    if l2 > 0:
        ax.axvline(1.0, color="gray", linestyle=":", linewidth=0.8)  # x as big as L2
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("time forward ÷ time reverse (>1: reverse wins)")
    ax.grid(alpha=0.3)
    if ok:
        ax.legend(fontsize=8)
    fig.suptitle(f"Second pass in reverse tile order — {device}")
    return fig


def draw(results_dir: Path, charts_dir: Path, device: str, slug: str) -> list[Path]:
    out = chart_dir(charts_dir, slug)
    written = []
    for name, table, draw_fn in (("se_tax", "e2e", se_tax_figure), ("l2_order", "l2_order", l2_figure)):
        rows = read_rows(Path(results_dir) / f"{table}_{slug}.csv")
        if not any(r.get("status") == "ok" for r in rows):
            continue
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.png"
        draw_fn(rows, device).savefig(path, dpi=110)
        written.append(path)
    return written
