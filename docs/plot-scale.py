#!/usr/bin/env python3
"""Draws docs/scale.png from the figures `cargo bench --bench scale` writes.

    OSHIRASE_BENCH_JSON=scale.json cargo bench --bench scale
    python3 docs/plot-scale.py scale.json docs/scale.png      # needs matplotlib

Four panels, each figure beside the baseline measured in the same run and the target
(dashed). Logarithmic axes: the engine and its floors differ by orders of magnitude.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ENGINE, FLOOR = "#c0392b", "#7f8c8d"


def label(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.2g}"


def bars(ax, title, labels, values, colours, target, unit, better):
    y = range(len(labels))
    ax.barh(y, values, color=colours)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(target, color="black", linestyle="--", linewidth=1)
    ax.text(target, len(labels) - 0.45, f" target {better} {target:g} {unit}", fontsize=8, va="bottom")
    for i, v in enumerate(values):
        ax.text(v, i, " " + label(v), va="center", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(unit)
    lo, hi = min(values + [target]), max(values + [target])
    ax.set_xlim(lo / 3, hi * 8)


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    f = json.load(open(src))
    n = f["residents"]
    d, s, lat, ing = f["daily"], f["simulate"], f["latency"], f["ingest"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    bars(
        axes[0][0],
        f"a. daily run of the catalogue, {n:,} residents",
        ["engine, ordinary day", "native floor, ordinary day", "engine, April 1", "native floor, April 1"],
        [d["ordinary"]["engine_s"], d["ordinary"]["floor_s"], d["april1"]["engine_s"], d["april1"]["floor_s"]],
        [ENGINE, FLOOR, ENGINE, FLOOR],
        2.0,
        "s",
        "≤",
    )
    bars(
        axes[0][1],
        "b. simulate one year (365 days)",
        ["engine (simulate)", "native floor"],
        [s["seconds"], s["floor_seconds"]],
        [ENGINE, FLOOR],
        60.0,
        "s",
        "≤",
    )
    bars(
        axes[1][0],
        "c. change event → decisions committed",
        ["SQLite p50", "SQLite p99", "SQLite bare transaction p99", "PostgreSQL p50", "PostgreSQL p99",
         "PostgreSQL bare transaction p99"],
        [lat["sqlite"]["p50_ms"], lat["sqlite"]["p99_ms"], lat["sqlite"]["tx_p99_ms"],
         lat["postgres"]["p50_ms"], lat["postgres"]["p99_ms"], lat["postgres"]["tx_p99_ms"]],
        [ENGINE, ENGINE, FLOOR, ENGINE, ENGINE, FLOOR],
        20.0,
        "ms",
        "≤",
    )
    bars(
        axes[1][1],
        f"d. snapshot ingest ({n:,} residents)",
        ["SQLite ingest", "SQLite raw INSERT", "PostgreSQL ingest", "PostgreSQL raw INSERT"],
        [ing["sqlite"]["rows_per_s"], ing["sqlite"]["raw_rows_per_s"], ing["postgres"]["rows_per_s"],
         ing["postgres"]["raw_rows_per_s"]],
        [ENGINE, FLOOR, ENGINE, FLOOR],
        100_000.0,
        "rows/s",
        "≥",
    )
    fig.suptitle(f"oshirase at scale: {n:,} synthetic residents ({f['machine']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
