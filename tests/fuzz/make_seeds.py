#!/usr/bin/env python3
"""Writes the generated seed files of the fuzz harnesses (tests/fuzz/corpus/), committed so that the
fuzz test needs no Python: small safetensors files and shard indexes, and a tiny byte-level BPE
tokenizer.json (synthetic merges, the Llama-3 pipeline and special tokens). Re-run after changing
this script: python3 tests/fuzz/make_seeds.py"""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def out(harness, name, data):
    os.makedirs(os.path.join(HERE, harness), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(os.path.join(HERE, harness, name), mode) as f:
        f.write(data)


# ---- safetensors ----------------------------------------------------------------------------------
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8}


def safetensors(tensors, metadata=None, pad=True, extra=None):
    """tensors: [(name, dtype, shape)], data bytes i % 251; extra: raw header entries to add."""
    header, offset, data = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        data += bytes((offset + i) % 251 for i in range(n))
        offset += n
    if extra:
        header.update(extra)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


out("safetensors", "one_f32.safetensors", safetensors([("t", "F32", [2, 3])]))
out("safetensors", "metadata.safetensors",
    safetensors([("a", "BF16", [4]), ("b", "F16", [2, 2])], metadata={"format": "pt"}))
out("safetensors", "unpadded_misaligned.safetensors",
    safetensors([("x", "I64", [3]), ("y", "I32", [1, 2, 1])], pad=False))
out("safetensors", "zero_size.safetensors",
    safetensors([("empty", "F32", [0, 7]), ("scalar", "F32", []), ("v", "BF16", [5])]))
out("safetensors", "empty_header.safetensors", safetensors([]))
out("safetensors", "llama_names.safetensors", safetensors([
    ("model.embed_tokens.weight", "BF16", [8, 4]),
    ("model.layers.0.input_layernorm.weight", "BF16", [4]),
    ("model.layers.0.self_attn.q_proj.weight", "BF16", [4, 4]),
    ("model.layers.0.self_attn.k_proj.qweight", "I32", [1, 2]),
    ("model.layers.0.self_attn.k_proj.scales", "F16", [1, 2]),
    ("model.norm.weight", "BF16", [4]),
], metadata={"format": "pt", "quantizer": "gptq"}))

# ---- sharded checkpoint index (shards a.safetensors, b.safetensors are made by the harness) -------
index = {"metadata": {"total_size": 40},
         "weight_map": {"a.x": "a.safetensors", "a.y": "a.safetensors", "b.z": "b.safetensors"}}
out("safetensors_index", "index.json", json.dumps(index, indent=2) + "\n")
out("safetensors_index", "one_shard.json",
    json.dumps({"weight_map": {"b.z": "b.safetensors"}}) + "\n")
out("safetensors_index", "path.json",
    json.dumps({"weight_map": {"a.x": "../a.safetensors", "a.y": "a.safetensors"}}) + "\n")

# ---- a tiny byte-level BPE tokenizer.json ----------------------------------------------------------
def byte_level_alphabet():
    """GPT-2's bytes_to_unicode: byte -> the char that spells it in tokenizer.json."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cps, n = {}, 0
    for b in range(256):
        if b in keep:
            cps[b] = chr(b)
        else:
            cps[b] = chr(256 + n)
            n += 1
    return cps


ALPHA = byte_level_alphabet()


def spell(text):
    return "".join(ALPHA[b] for b in text.encode("utf-8"))


LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
PAIRS = [(" ", "t"), ("h", "e"), (" t", "he"), ("i", "n"), ("e", "r"), (" ", "a"), ("o", "n"),
         ("r", "e"), (" ", "s"), ("a", "t"), ("e", "n"), (" ", "w"), ("o", "r"), ("in", "g"),
         (" ", "c"), ("i", "s"), ("l", "l"), (" ", "h"), ("e", "s"), (" ", "o"), ("a", "n"),
         (" ", " "), ("  ", "  "), ("\n", "\n"), ("é", "t"), ("\u00e4", "\u00e4"),
         ("\u4f60", "\u597d")]


def tiny_tokenizer(pair_merges=False, escaped=False, ignore_merges=True):
    vocab = {ALPHA[b]: b for b in range(256)}
    # Multi-byte characters first need their own byte merges (é = C3 A9, 你 = E4 BD A0, ...).
    merges = []
    def add(left, right):
        l, r = spell(left) if isinstance(left, str) else left, spell(right) if isinstance(right, str) else right
        merged = l + r
        merges.append((l, r))
        if merged not in vocab:
            vocab[merged] = len(vocab)
    for ch in ["é", "\u00e4", "\u4f60", "\u597d"]:
        b = [ALPHA[x] for x in ch.encode("utf-8")]
        acc = b[0]
        for nxt in b[1:]:
            merges.append((acc, nxt))
            if acc + nxt not in vocab:
                vocab[acc + nxt] = len(vocab)
            acc += nxt
    for left, right in PAIRS:
        add(left, right)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", "<|python_tag|>"]
    added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i, s in enumerate(specials)]
    added.append({"id": len(vocab) + len(specials), "content": "héllo wörld", "single_word": False,
                  "lstrip": False, "rstrip": False, "normalized": True, "special": False})
    doc = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": ignore_merges, "vocab": vocab,
                  "merges": [[l, r] for l, r in merges] if pair_merges
                  else [l + " " + r for l, r in merges]},
    }
    return json.dumps(doc, ensure_ascii=escaped, indent=None if escaped else 1) + "\n"


out("tokenizer_json", "tiny.json", tiny_tokenizer())
out("tokenizer_json", "tiny_pair_merges.json", tiny_tokenizer(pair_merges=True, ignore_merges=False))
out("tokenizer_json", "tiny_escaped.json", tiny_tokenizer(escaped=True))
