#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Regenerates the experiment table of docs/finetune.md: QLoRA, QA-LoRA, DoRA, RoLoRA, LoftQ, EoRA.

Fine-tunes stories260K and babyllama-tok105 (../shared/data) on tinyshakespeare (trained on
the first 90 %, validated on the last 10 %) and on the vendored Aesop excerpt (the same split)
with `qlr finetune --json`, every row on the same token budget and flags but those it
compares, then scores each resulting model on the TinyStories slice with `qlr perplexity
--json` (what the model forgot: both models were trained on TinyStories). The table replaces
what lies between the markers in docs/finetune.md. Python's standard library only.

    python3 bench/finetune.py [--qlr build/default/examples/qlr] [--threads 2]
                              [--steps 60] [--out docs/finetune.md]
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fidelity import ROOT, arguments, cpu_name, run  # noqa: E402

BEGIN, END = "<!-- bench/finetune.py: begin -->", "<!-- bench/finetune.py: end -->"
SHARED = os.path.join(ROOT, "../shared/data")
MODELS = [
    ("stories260K", []),
    ("babyllama-tok105",
     ["--model", os.path.join(SHARED, "models/babyllama-tok105/model5000.bin"),
      "--tokenizer", os.path.join(SHARED, "models/babyllama-tok105/tok105.bin")]),
]
W4A4, W4A8 = "int4-sym-g32+a4", "int4-sym-g32+a8"


def rows():
    """(group, label, finetune flags, what the row reports: "after" or "merged")."""
    yield "FP32", "LoRA", [], "after"
    for bits in (4, 3, 2):
        yield (f"INT{bits} g32", "QLoRA: NF4 + LoRA, merged, RTN",
               ["--linear", "nf4-g64", "--merge-linear", f"int{bits}-asym-g32"], "merged")
        yield (f"INT{bits} g32", "QA-LoRA, merged (lossless)",
               ["--linear", f"int{bits}-asym-g32", "--adapter", "qa-lora"], "merged")
    yield "NF4 g64", "QLoRA: NF4 + LoRA, unmerged", ["--linear", "nf4-g64"], "after"
    yield "INT4 g32", "LoRA, unmerged", ["--linear", "int4-asym-g32"], "after"
    yield "INT4 g32", "DoRA, unmerged", ["--linear", "int4-asym-g32", "--adapter", "dora"], "after"
    for spec, name in ((W4A4, "W4A4"), (W4A8, "W4A8")):
        yield name, "LoRA, merged, RTN", ["--merge-linear", spec], "merged"
        yield (name, "RoLoRA: rotated + LoRA, merged, RTN",
               ["--rotation", "hadamard", "--merge-linear", spec], "merged")
    for init in ("kaiming", "loftq", "eora"):
        yield ("INT2 g32", f"LoRA, {init} init, unmerged",
               ["--linear", "int2-asym-g32", "--init", init], "after")


def forgetting(a, model_flags, flags, folder, merged):
    """The fine-tuned model's NLL and bits/weight on the TinyStories slice."""
    def value(flag):
        return flags[flags.index(flag) + 1] if flag in flags else None
    args = ["perplexity", "--text", a.tinystories, "--max-tokens", str(a.forget_tokens),
            *model_flags]
    if value("--rotation"):
        args += ["--rotation", value("--rotation")]
    if merged:
        args += ["--linear", value("--merge-linear") or value("--linear"),
                 "--layers", os.path.join(folder, "merged_layers.safetensors")]
    else:
        if value("--linear"):
            args += ["--linear", value("--linear")]
        args += ["--adapter", folder]
    j = run(a.qlr, args, a.threads)
    return j["nll"], j["block_bits_per_param"]


def main():
    p = arguments(__doc__, "docs/finetune.md")
    p.set_defaults(threads=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--forget-tokens", type=int, default=8192)
    a = p.parse_args()
    tasks = [("tinyshakespeare", a.shakespeare),
             ("Aesop", os.path.join(ROOT, "data/aesop/aesop_excerpt.txt"))]
    budget = ["--steps", str(a.steps), "--batch", str(a.batch), "--seq", str(a.seq)]
    lines = [BEGIN, "",
             f"`python3 bench/finetune.py --threads {a.threads} --steps {a.steps}`: {cpu_name()}, "
             f"{a.threads} threads; every run {a.steps} steps of {a.batch} × {a.seq} tokens, "
             "rank 8, α 16, lr 2e-3 (10 warmup steps), all seven block linears, seed 0. NLL in "
             "nats/token: *valid* on the task's held-out 10 %, *TinyStories* on the first "
             f"{a.forget_tokens} tokens of the TinyStories slice (lower = less forgotten). "
             "*before*: the starting model (the quantized base, or LoftQ/EoRA's start); "
             "*after*: the fine-tuned model as it serves (unmerged, or merged into the row's "
             "format). bits: bits per block weight of the served model.", ""]
    work = tempfile.mkdtemp(prefix="qlr_finetune_table_")
    try:
        for model, model_flags in MODELS:
            if model_flags and not os.path.exists(model_flags[1]):
                print(f"finetune.py: {model_flags[1]} not found: {model} skipped", file=sys.stderr)
                continue
            for task, text in tasks:
                if not os.path.exists(text):
                    print(f"finetune.py: {text} not found: {task} skipped", file=sys.stderr)
                    continue
                lines += [f"**{model} on {task}**", "",
                          "| format | method | bits | trainable | tokens | valid before | "
                          "valid after | TinyStories | tokens/s | peak RSS |",
                          "|---|---|---|---|---|---|---|---|---|---|"]
                base = None
                for group, label, flags, report in rows():
                    folder = os.path.join(work, f"{model}-{task}-{len(lines)}")
                    j = run(a.qlr, ["finetune", "--train", text, *model_flags, *budget, *flags,
                                    "--save", folder], a.threads)
                    merged = report == "merged"
                    after = j["valid_nll_merged"] if merged else j["valid_nll_after"]
                    forgot, bits = forgetting(a, model_flags, flags, folder, merged)
                    if base is None:  # the first row trains on FP32: its start is the base
                        base_forgot = run(a.qlr, ["perplexity", "--text", a.tinystories,
                                                  "--max-tokens", str(a.forget_tokens),
                                                  *model_flags], a.threads)["nll"]
                        base = j["valid_nll_before"]
                        lines.append(f"| FP32 | base, not fine-tuned | 32 | 0 | 0 | {base:.3f} | "
                                     f"{base:.3f} | {base_forgot:.3f} | | |")
                    lines.append(
                        f"| {group} | {label} | {bits:.2f} | {j['trainable_parameters']:,} | "
                        f"{int(j['train_tokens']):,} | {j['valid_nll_before']:.3f} | "
                        f"{after:.3f} | {forgot:.3f} | {j['tokens_per_s']:,.0f} | "
                        f"{j['peak_rss_bytes'] / 2**20:.0f} MiB |")
                    print(f"finetune.py: {model} {task} {group} {label}: {after:.3f}",
                          file=sys.stderr)
                    shutil.rmtree(folder, ignore_errors=True)
                lines.append("")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines.append(END)
    with open(a.out) as f:
        page = f.read()
    if BEGIN in page and END in page:
        page = page[:page.index(BEGIN)] + "\n".join(lines) + page[page.index(END) + len(END):]
    else:
        page += "\n" + "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(page)
    print(f"finetune.py: wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
