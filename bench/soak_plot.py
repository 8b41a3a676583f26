"""Plots a soak result (bench/results/soak-*.json): RSS and open file descriptors per node, and
p99 latency per operation, over time, one column per backend."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
r = json.load(open(src))
samples = r["samples"]
backends = [k for k in samples[0] if k != "t"]
fig, axes = plt.subplots(3, len(backends), figsize=(6 * len(backends), 9), sharex=True, squeeze=False)
t = [s["t"] / 60 for s in samples]
for col, b in enumerate(backends):
    nodes = [n["node"] for n in samples[0][b]["nodes"]]
    for k, name in enumerate(nodes):
        axes[0][col].plot(t, [s[b]["nodes"][k]["rss_kib"] / 1024 for s in samples], label=name)
        axes[1][col].plot(t, [s[b]["nodes"][k]["fds"] for s in samples], label=name)
    ops = sorted({op for s in samples for op in s[b]["ops"]})
    for op in ops:
        ys = [s[b]["ops"].get(op, {}).get("p99_ms") for s in samples]
        axes[2][col].plot(t, [y if y else float("nan") for y in ys], label=op)
    axes[0][col].set_title(f"{b}: RSS (MiB)")
    axes[1][col].set_title(f"{b}: open file descriptors")
    axes[2][col].set_title(f"{b}: p99 latency per operation (ms)")
    axes[2][col].set_yscale("log")
    axes[2][col].set_xlabel("minutes")
    for row in range(3):
        axes[row][col].legend(fontsize=7, loc="upper left")
        axes[row][col].grid(alpha=0.3)
    axes[0][col].set_ylim(bottom=0)
    axes[1][col].set_ylim(bottom=0)
fig.suptitle(f"berth soak, {r['seconds'] // 60} min, commit {r['commit']}")
fig.tight_layout()
fig.savefig(out, dpi=80)
