#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plot qlr's GEMM benchmarks from Google Benchmark JSON.

Reads the output of `gemm_bench --benchmark_out=FILE --benchmark_out_format=json`, pairs every
qlr figure with its peers on the same shape (names `<kernel>/<impl>/M:<m>/N:<n>/K:<k>/threads:<t>`),
and draws, per kernel, shape and thread count, GOP/s and GB/s of weights against M, with the
best memory-read pattern of the same run as the bandwidth line. Medians are used when the
run has repetitions. Needs matplotlib (Debian: python3-matplotlib).

usage: plot.py RESULTS.json [-o OUT.png] [--ratios]
  --ratios  also print each qlr figure as a ratio to its peers and to the read limit
"""
import argparse
import json
import re
import sys
from collections import defaultdict

NAME = re.compile(r"^(?P<kernel>[a-z0-9_]+)/(?P<impl>[a-z0-9_-]+)/M:(?P<m>\d+)/N:(?P<n>\d+)/K:(?P<k>\d+)/threads:(?P<t>\d+)")
MEMREAD = re.compile(r"^memread/streams:(?P<s>\d+)(/prefetch)?/threads:(?P<t>\d+)")


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = [b for b in data["benchmarks"] if b.get("aggregate_name") in (None, "median")]
    results = defaultdict(dict)  # (kernel, n, k, threads) -> impl -> m -> counters
    read_limit = {}  # threads -> best GB/s
    for b in rows:
        name = b["run_name"] if "run_name" in b else b["name"]
        if m := MEMREAD.match(name):
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
    return data.get("context", {}), results, read_limit


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="Google Benchmark JSON from gemm_bench")
    parser.add_argument("-o", "--output", default="gemm_bench.png", help="PNG or SVG to write")
    parser.add_argument("--ratios", action="store_true", help="print qlr's ratios to its peers")
    args = parser.parse_args()
    try:
        context, results, read_limit = load(args.results)
    except (OSError, ValueError, KeyError) as e:
        print(f"plot.py: cannot read {args.results}: {e}", file=sys.stderr)
        return 1
    if not results:
        print(f"plot.py: {args.results} holds no <kernel>/<impl>/M:…/N:…/K:…/threads:… results", file=sys.stderr)
        return 1
    if args.ratios:
        print_ratios(results, read_limit)
    plot(context, results, read_limit, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
