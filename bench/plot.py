#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plot qlr's GEMM benchmarks from Google Benchmark JSON.

Reads the output of `gemm_bench --benchmark_out=FILE --benchmark_out_format=json`, pairs every
qlr figure with its peers on the same shape (names `<kernel>/<impl>/M:<m>/N:<n>/K:<k>/threads:<t>`),
and draws, per kernel, shape and thread count, GOP/s and GB/s of weights against M, with the
best memory-read pattern of the same run as the bandwidth line. Medians are used when the
run has repetitions. Needs matplotlib (Debian: python3-matplotlib).

usage: plot.py RESULTS.json [-o OUT.png] [--ratios] [--per-isa]
  --ratios   also print each qlr figure as a ratio to its peers and to the read limit
  --per-isa  instead, one picture per qlr path (OUT-<impl>.png): every format's GEMV in GB/s
             against the read limit, and its largest-M GEMM in GOP/s against Eigen, oneDNN
             and the core's FMA peak (fma_peak), per shape and thread count
"""
import argparse
import json
import re
import sys
from collections import defaultdict

NAME = re.compile(r"^(?P<kernel>[a-z0-9_]+)/(?P<impl>[a-z0-9_-]+)/M:(?P<m>\d+)/N:(?P<n>\d+)/K:(?P<k>\d+)/threads:(?P<t>\d+)")
MEMREAD = re.compile(r"^memread/streams:(?P<s>\d+)(/prefetch)?/threads:(?P<t>\d+)")
FMA_PEAK = re.compile(r"^fma_peak/(?P<impl>[a-z0-9_-]+)/threads:(?P<t>\d+)")


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = [b for b in data["benchmarks"] if b.get("aggregate_name") in (None, "median")]
    results = defaultdict(dict)  # (kernel, n, k, threads) -> impl -> m -> counters
    read_limit = {}  # threads -> best GB/s
    fma_peak = {}  # (impl, threads) -> GOP/s
    for b in rows:
        name = b["run_name"] if "run_name" in b else b["name"]
        if m := FMA_PEAK.match(name):
            fma_peak[(m["impl"], int(m["t"]))] = b["GOPs"] / 1e9
        elif m := MEMREAD.match(name):
            t = int(m["t"])
            read_limit[t] = max(read_limit.get(t, 0.0), b["GBps"] / 1e9)
        elif m := NAME.match(name):
            key = (m["kernel"].replace("_gemv", "").replace("_gemm", ""), int(m["n"]), int(m["k"]), int(m["t"]))
            results[key].setdefault(m["impl"], {})[int(m["m"])] = (b.get("GOPs", 0) / 1e9, b.get("GBps", 0) / 1e9)
    # A peer's own GEMV may read faster than the plain patterns: the limit is the best of all.
    for (kernel, n, k, t), impls in results.items():
        for peer in ("eigen", "onednn"):
            if 1 in impls.get(peer, {}):
                read_limit[t] = max(read_limit.get(t, 0.0), impls[peer][1][1])
    # Eigen FP32 and oneDNN s8 do not depend on qlr's format: one run of each serves every
    # kernel of its shape (Eigen the weight-only and integer ones, oneDNN the integer ones).
    for peer, kernels in (("eigen", None), ("onednn", ("w8a8", "w4a8", "w4a4", "w3a8", "w2a8"))):
        shared = {(n, k, t): impls[peer] for (_, n, k, t), impls in results.items() if peer in impls}
        for (kernel, n, k, t), impls in results.items():
            if peer not in impls and (n, k, t) in shared and (kernels is None or kernel in kernels):
                impls[peer] = shared[(n, k, t)]
    return data.get("context", {}), results, read_limit, fma_peak


def print_ratios(results, read_limit):
    for (kernel, n, k, t), impls in sorted(results.items()):
        qlr = impls.get("qlr", {})
        for m, (gops, gbps) in sorted(qlr.items()):
            parts = [f"{kernel} M={m} N={n} K={k} threads={t}: qlr {gops:.1f} GOP/s, {gbps:.1f} GB/s"]
            if t in read_limit:
                parts.append(f"{gbps / read_limit[t]:.2f}x read limit ({read_limit[t]:.1f} GB/s)")
            for peer in ("eigen", "naive", "onednn"):
                if m in impls.get(peer, {}):
                    parts.append(f"{gops / impls[peer][m][0]:.2f}x {peer}")
            print("; ".join(parts))


def plot(context, results, read_limit, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(results)
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 3.2 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        kernel, n, k, t = key
        for col, (metric, label) in enumerate(((0, "GOP/s"), (1, "GB/s of weights"))):
            ax = axes[row][col]
            for impl, by_m in sorted(results[key].items()):
                ms = sorted(by_m)
                ax.plot(ms, [by_m[m][metric] for m in ms], marker="o", label=impl)
            if metric == 1 and t in read_limit:
                ax.axhline(read_limit[t], color="k", linestyle="--", label="memory read limit (best pattern)")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("M (tokens)")
            ax.set_ylabel(label)
            ax.set_title(f"{kernel}  N={n} K={k}  threads={t}", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    cpu = context.get("qlr_cpu_features", "")
    fig.suptitle(f"qlr {context.get('qlr_version', '')} on {context.get('host_name', '')} "
                 f"(isa {context.get('qlr_isa', '?')}; {cpu})", fontsize=9,
                 y=1 - 0.1 / fig.get_figheight(), va="top")  # inches from the top, any row count
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # 0.4 in for the suptitle
    fig.savefig(out, dpi=90)
    print(f"wrote {out}", file=sys.stderr)


def plot_per_isa(context, results, read_limit, fma_peak, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = sorted({impl for impls in results.values() for impl in impls if impl.startswith("qlr")})
    shapes = sorted({(n, k, t) for (_, n, k, t) in results})
    stem, dot, suffix = out.rpartition(".")
    if not dot:
        stem, suffix = out, "png"
    for impl in impls:
        fig, axes = plt.subplots(len(shapes), 2, figsize=(12, 3.4 * len(shapes)), squeeze=False)
        for row, (n, k, t) in enumerate(shapes):
            kernels = sorted(kernel for (kernel, kn, kk, kt), impls_ in results.items()
                             if (kn, kk, kt) == (n, k, t) and impl in impls_)
            gemv = [results[(kernel, n, k, t)][impl].get(1, (0, 0))[1] for kernel in kernels]
            ax = axes[row][0]
            ax.bar(kernels, gemv, color="tab:blue")
            if t in read_limit:
                ax.axhline(read_limit[t], color="k", linestyle="--", label=f"read limit {read_limit[t]:.1f} GB/s")
            ax.set_ylabel("GEMV (M = 1), GB/s of weights")
            ax.set_title(f"{impl}  N={n} K={k}  threads={t}", fontsize=9)
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
            ax.legend(fontsize=7)
            ax = axes[row][1]
            top_m = max((max(results[(kernel, n, k, t)][impl]) for kernel in kernels), default=1)
            gemm = [results[(kernel, n, k, t)][impl].get(top_m, (0, 0))[0] for kernel in kernels]
            ax.bar(kernels, gemm, color="tab:green")
            for peer, style in (("eigen", ":"), ("onednn", "-.")):
                values = [results[(kernel, n, k, t)][peer][top_m][0] for kernel in kernels
                          if top_m in results[(kernel, n, k, t)].get(peer, {})]
                if values:
                    ax.axhline(max(values), color="tab:red", linestyle=style, label=f"{peer} {max(values):.0f} GOP/s")
            peak = fma_peak.get((impl, t), fma_peak.get(("qlr", t)))
            if peak:
                ax.axhline(peak, color="k", linestyle="--", label=f"FP32 FMA peak {peak:.0f} GOP/s")
            ax.set_ylabel(f"GEMM (M = {top_m}), GOP/s")
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
            ax.legend(fontsize=7)
        fig.suptitle(f"qlr {context.get('qlr_version', '')}, path {impl} (best on this CPU: "
                     f"{context.get('qlr_isa', '?')}; {context.get('qlr_cpu_features', '')})", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
        path = f"{stem}-{impl}.{suffix}"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        print(f"wrote {path}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="Google Benchmark JSON from gemm_bench")
    parser.add_argument("-o", "--output", default="gemm_bench.png", help="PNG or SVG to write")
    parser.add_argument("--ratios", action="store_true", help="print qlr's ratios to its peers")
    parser.add_argument("--per-isa", action="store_true", help="one bar picture per qlr path")
    args = parser.parse_args()
    try:
        context, results, read_limit, fma_peak = load(args.results)
    except (OSError, ValueError, KeyError) as e:
        print(f"plot.py: cannot read {args.results}: {e}", file=sys.stderr)
        return 1
    if not results:
        print(f"plot.py: {args.results} holds no <kernel>/<impl>/M:…/N:…/K:…/threads:… results", file=sys.stderr)
        return 1
    if args.ratios:
        print_ratios(results, read_limit)
    if args.per_isa:
        plot_per_isa(context, results, read_limit, fma_peak, args.output)
    else:
        plot(context, results, read_limit, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
