#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Regenerates docs/fidelity.md: what each qlr setting costs the real model.

Runs `qlr perplexity --json` (NLL and prompt-processing speed) on the TinyStories slice and
on tinyshakespeare, and `qlr generate --json` (decoding speed), for every setting below on
the vendored stories260K model, and writes one Markdown table. Python's standard library
only; the qlr binary does the work.

    python3 bench/fidelity.py [--qlr build/default/examples/qlr] [--threads 1]
                              [--shakespeare ../shared/data/text/tinyshakespeare.txt]
                              [--out docs/fidelity.md]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, --linear spec, --rotation): the list, in the order a reader compares them.
SETTINGS = [
    ("FP32", "fp32", "none"),
    ("W8 g32 (weight-only)", "int8-sym-g32-f16", "none"),
    ("W8A8 per-channel", "int8-sym-pc-f16+a8", "none"),
    ("W4 g32 RTN", "int4-asym-g32-f16", "none"),
    ("W4 g32 clip search", "int4-asym-g32-clip-f16", "none"),
    ("W4 g64 RTN", "int4-asym-g64-f16", "none"),
    ("W4 g64 clip search", "int4-asym-g64-clip-f16", "none"),
    ("W4 g128 RTN", "int4-asym-g128-f16", "none"),
    ("W4 g128 clip search", "int4-asym-g128-clip-f16", "none"),
    ("NF4 g64", "nf4-g64", "none"),
    ("W3 g32 RTN", "int3-asym-g32-f16", "none"),
    ("W3 g32 clip search", "int3-asym-g32-clip-f16", "none"),
    ("W2 g32 RTN", "int2-asym-g32-f16", "none"),
    ("W2 g32 clip search", "int2-asym-g32-clip-f16", "none"),
    ("W4 g32 symmetric (the base of the rows below)", "int4-sym-g32-f16", "none"),
    ("W4A8 g32", "int4-sym-g32-f16+a8", "none"),
    ("W4A8 g32, randomized Hadamard R1+R4", "int4-sym-g32-f16+a8", "randomized-hadamard"),
    ("W4A4 g32, no rotation", "int4-sym-g32-f16+a4", "none"),
    ("W4A4 g32, randomized Hadamard R1+R4", "int4-sym-g32-f16+a4", "randomized-hadamard"),
    ("W4A4 g32, Hadamard R1+R4", "int4-sym-g32-f16+a4", "hadamard"),
    ("W4A4 g32, random orthogonal R1+R4", "int4-sym-g32-f16+a4", "random-orthogonal"),
    ("W4A4 g32, online Hadamard at every layer input", "int4-sym-g32-f16+a4+rht1", "none"),
    ("W4A4 g32, R1+R4 and online at every input", "int4-sym-g32-f16+a4+rht1", "randomized-hadamard"),
]


def run(qlr, args, threads):
    """One qlr subcommand's JSON figures."""
    out = subprocess.run([qlr, *args, "--threads", str(threads), "--json"], check=True,
                         stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def arguments(doc, out):
    """The options both table scripts take: the tool, threads, the two texts, the output."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--qlr", default=os.path.join(ROOT, "build/default/examples/qlr"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tinystories", default=os.path.join(ROOT, "data/tinystories/tinystories_valid_head.txt"))
    p.add_argument("--shakespeare", default=os.path.join(ROOT, "../shared/data/text/tinyshakespeare.txt"))
    p.add_argument("--out", default=os.path.join(ROOT, out))
    return p


def texts(tinystories_flags, shakespeare, tool):
    """[(name, flags)]: TinyStories, and tinyshakespeare when it is there."""
    found = [("TinyStories", tinystories_flags)]
    if os.path.exists(shakespeare):
        found.append(("tinyshakespeare", ["--text", shakespeare]))
    else:
        print(f"{tool}: {shakespeare} not found: tinyshakespeare column skipped", file=sys.stderr)
    return found


def write_lines(path, lines, tool):
    """Writes the Markdown lines to path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{tool}: wrote {path}", file=sys.stderr)


def main():
    p = arguments(__doc__, "docs/fidelity.md")
    p.add_argument("--max-tokens", type=int, default=8192)
    a = p.parse_args()
    texts_flags = texts(["--text", a.tinystories], a.shakespeare, "fidelity.py")

    rows = []
    for label, spec, rotation in SETTINGS:
        print(f"fidelity.py: {label}", file=sys.stderr)
        common = ["--linear", spec, "--rotation", rotation]
        scores = [run(a.qlr, ["perplexity", *flags, "--max-tokens", str(a.max_tokens),
                              "--window", "256", *common], a.threads) for _, flags in texts_flags]
        story = run(a.qlr, ["generate", "--steps", "256", *common], a.threads)
        rows.append((label, spec, rotation, scores, story))

    isa = subprocess.run([a.qlr, "demo", "--steps", "1", "--max-tokens", "2", "--json"],
                         check=True, stdout=subprocess.PIPE, text=True)
    isa = json.loads(isa.stdout)["isa"]
    fp32 = rows[0][3]
    lines = [
        "# Fidelity of every qlr setting on a real model",
        "",
        "Generated by `python3 bench/fidelity.py` "
        f"on {datetime.date.today().isoformat()}: {cpu_name()}, kernels `{isa}`, {a.threads} thread(s).",
        "",
        "stories260K (the vendored llama2.c model: dim 64, 5 blocks, 260K parameters), every",
        "block linear layer (q, k, v, o, gate, up, down) as the spec says, the classifier FP32.",
        f"NLL in nats/token over the first {a.max_tokens} tokens of each text, in non-overlapping",
        "windows of 256 from position 0, each story with BOS (`qlr perplexity`); Δ is the change",
        "against FP32 on the same text. bits/weight is the storage (codes, scales, zeros) of the",
        "block layers; bits/param averages it with the FP32 classifier (12.6 % of the weights,",
        "`--quantize-classifier` quantizes it too). Prefill tokens/s is the",
        "TinyStories run (M = 256 per forward); decode tokens/s is `qlr generate --steps 256`",
        "(M = 1). R1+R4 is the model-level rotation of RoLoRA/QuaRot (RMSNorm folded, residual",
        "stream rotated in the weights, online Hadamard before down_proj); \"online at every",
        "input\" is qlr's per-layer input rotation (`+rht1`), which also covers o_proj's input.",
        "",
    ]
    header = "| setting | `--linear` | `--rotation` | bits/weight | bits/param |"
    rule = "|---|---|---|---:|---:|"
    for name, _ in texts_flags:
        header += f" {name} NLL | Δ | ppl |"
        rule += "---:|---:|---:|"
    header += " prefill tok/s | decode tok/s |"
    rule += "---:|---:|"
    lines += [header, rule]
    for label, spec, rotation, scores, story in rows:
        cells = (f"| {label} | `{spec}` | {rotation} | {scores[0]['block_bits_per_param']:.2f} |"
                 f" {scores[0]['bits_per_param']:.2f} |")
        for s, base in zip(scores, fp32):
            cells += f" {s['nll']:.4f} | {s['nll'] - base['nll']:+.4f} | {s['ppl']:.3f} |"
        cells += f" {scores[0]['tokens_per_s']:.0f} | {story['tokens_per_s']:.0f} |"
        lines.append(cells)
    write_lines(a.out, lines, "fidelity.py")


if __name__ == "__main__":
    main()
