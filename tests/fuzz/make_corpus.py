#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpora of tests/fuzz (small, deterministic files, each under 4 KB):
# corpus/safetensors/ holds safetensors files, corpus/peft/ holds
# adapter_config.json + NUL + adapter_model.safetensors, the input format of peft_fuzz.
# Run from anywhere: python3 tests/fuzz/make_corpus.py
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(1234)
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I32": 4, "I64": 8}


def payload(dtype, n):
    if dtype == "F32":
        return struct.pack(f"<{n}f", *[rng.gauss(0, 0.05) for _ in range(n)])
    if dtype == "F16":
        return struct.pack(f"<{n}e", *[rng.gauss(0, 0.05) for _ in range(n)])
    if dtype == "BF16":  # upper halves of floats
        return b"".join(struct.pack("<f", rng.gauss(0, 0.05))[2:] for _ in range(n))
    return bytes(rng.randrange(256) for _ in range(n * SIZES[dtype]))


def safetensors(tensors, metadata=None, lead="", pad=True):
    """tensors: list of (name, dtype, shape); data laid out in name order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in sorted(tensors):
        n = 1
        for d in shape:
            n *= d
        blob = payload(dtype, n)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = lead + json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * (-len(text) % 8)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + data


def lora(module, r, k, n, dtype="F32", dora=False):
    p = "base_model.model." + module
    out = [(p + ".lora_A.weight", dtype, [r, k]), (p + ".lora_B.weight", dtype, [n, r])]
    if dora:
        out.append((p + ".lora_magnitude_vector", dtype, [n]))
    return out


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    assert len(data) < 4096, (name, len(data))
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


st = os.path.join(HERE, "corpus", "safetensors")
write(st, "empty", safetensors([]))
write(st, "metadata_only", safetensors([], {"format": "pt"}))
write(st, "every_dtype", safetensors([(f"t.{d}", d, [2, 3]) for d in SIZES], {"format": "pt"}))
write(st, "scalar_and_empty", safetensors([("s", "F32", []), ("z", "F16", [0, 4]), ("v", "BF16", [5])]))
write(st, "leading_spaces", safetensors([("w", "F32", [2, 2])], lead="   "))
write(st, "unpadded", safetensors([("w", "F16", [3])], pad=False))
write(st, "peft_shaped", safetensors(lora("model.layers.0.self_attn.q_proj", 2, 16, 16)
                                     + lora("model.layers.0.self_attn.v_proj", 2, 16, 8), {"format": "pt"}))
write(st, "gpt2_shaped", safetensors(lora("transformer.h.0.attn.c_attn", 1, 12, 36, "F16"), {"format": "pt"}))
valid = safetensors([("a", "F32", [2]), ("b", "I32", [1])])
write(st, "truncated", valid[:-3])
dup = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
write(st, "duplicate_key", struct.pack("<Q", len(dup)) + dup + b"\0\0\0\0")

pf = os.path.join(HERE, "corpus", "peft")


def peft(config, tensors):
    return json.dumps(config, indent=1).encode() + b"\0" + safetensors(tensors, {"format": "pt"})


base = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
        "target_modules": ["q_proj", "v_proj"], "use_dora": False, "use_rslora": False,
        "fan_in_fan_out": False, "rank_pattern": {}, "alpha_pattern": {}, "bias": "none"}
q, v = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"
write(pf, "lora", peft(base, lora(q, 2, 16, 16) + lora(v, 2, 16, 8)))
write(pf, "dora", peft(dict(base, use_dora=True), lora(q, 2, 16, 16, dora=True) + lora(v, 2, 16, 8, dora=True)))
write(pf, "patterns_rslora", peft(dict(base, use_rslora=True, rank_pattern={"v_proj": 1, "layers\\.[0-3]\\.self_attn\\.q_proj": 3},
                                       alpha_pattern={"q_proj": 8}),
                                  lora(q, 3, 16, 16) + lora(v, 1, 16, 8)))
write(pf, "bf16_f16", peft(dict(base, r=1, lora_alpha=32), lora(q, 1, 16, 16, "BF16") + lora(v, 1, 16, 8, "F16")))
write(pf, "modules_to_save", peft(dict(base, modules_to_save=["classifier"], future_key=1, lora_dropout=0.1),
                                  lora(q, 2, 16, 16) + [("base_model.model.classifier.weight", "F32", [2, 16])]))
write(pf, "regex_targets", peft(dict(base, target_modules=".*\\.(q|v)_proj", fan_in_fan_out=True),
                                lora("transformer.h.0.attn.c_attn", 2, 12, 36)))
write(pf, "config_only", json.dumps(base).encode())
write(pf, "missing_b", peft(base, lora(q, 2, 16, 16)[:1]))
