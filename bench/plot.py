"""The benchmark's figure: time per call and extra memory against size."""

from bench.impls import IMPLS
from bench.report import header_line


def write_plot(path: str, meta: dict, records: list[dict]) -> None:
    """PNG with two log-log panels: time per call and extra memory vs size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["M"] * r["K"] * r["N"] for r in records]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    omitted = False
    # One colour per implementation: the default cycle has 10 for 12 of them.
    colours = plt.get_cmap("tab20").colors
    for i, (key, label) in enumerate(IMPLS.items()):
        style = {"marker": "o", "label": label, "color": colours[i % len(colours)]}
        t_pts, m_pts = [], []
        for x, r in zip(xs, records):
            fig_k = r["impls"].get(key, {})
            if fig_k.get("median_s"):
                t_pts.append((x, fig_k["median_s"]))
            mem = fig_k.get("memory") or {}
            if mem.get("status") == "ok":
                if mem["peak_extra_bytes"] > 0:
                    m_pts.append((x, mem["extra_mib"]))
                else:
                    omitted = True
        if t_pts:
            ax_t.plot(*zip(*t_pts), **style)
        if m_pts:
            ax_m.plot(*zip(*m_pts), **style)
    for ax in (ax_t, ax_m):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels(
            [r["size"] for r in records],
            rotation=60,
            ha="right",
            rotation_mode="anchor",
            fontsize="small",
        )
        ax.minorticks_off()
        ax.set_xlabel("size M×K×N")
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_ylabel("median time per call (s)")
    ax_t.set_title("time per call")
    ax_t.legend(fontsize="small")
    ax_m.set_ylabel("peak beyond inputs and outputs (MiB)")
    ax_m.set_title("extra memory" + (" (values ≤ 0 omitted)" if omitted else ""))
    if ax_m.lines:
        ax_m.legend(fontsize="small")
    else:
        ax_m.text(0.5, 0.5, "no memory probed", ha="center", va="center", transform=ax_m.transAxes)
    fig.suptitle(header_line(meta), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
