#!/usr/bin/env python3
"""Writes the generated seed files of the fuzz harnesses (tests/fuzz/corpus/), committed so that the
fuzz test needs no Python: small safetensors files and shard indexes, a tiny byte-level BPE
tokenizer.json (synthetic merges, the Llama-3 pipeline and special tokens), and small GGUF files
(two tiny Llamas, one with that tokenizer inside, and one of every metadata value type). Re-run after changing
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


# ---- GGUF files (llama.cpp's format; io/gguf.hpp) ---------------------------------------------------
GGUF_SCALARS = {"u8": (0, "B"), "i8": (1, "b"), "u16": (2, "H"), "i16": (3, "h"), "u32": (4, "I"),
                "i32": (5, "i"), "f32": (6, "f"), "bool": (7, "?"), "u64": (10, "Q"),
                "i64": (11, "q"), "f64": (12, "d")}
GGML_TYPES = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q8_0": (8, 32, 34),
              "BF16": (30, 1, 2)}  # id, elements per block, bytes per block


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, value):
    """kind: a scalar type name, "str", or "arr:<element kind>" -> (type id, encoded value)."""
    if kind == "str":
        return 8, gguf_string(value)
    if kind.startswith("arr:"):
        element = kind[4:]
        element_id = 8 if element == "str" else GGUF_SCALARS[element][0]
        return 9, struct.pack("<IQ", element_id, len(value)) + b"".join(
            gguf_value(element, v)[1] for v in value)
    type_id, fmt = GGUF_SCALARS[kind]
    return type_id, struct.pack("<" + fmt, value)


def ggml_bytes(ggml_type, n, salt):
    """n elements of plausible weights: norms ~1, blocks with a small f16 scale."""
    if ggml_type == "F32":
        return struct.pack("<%df" % n, *(1.0 + 0.01 * ((i + salt) % 7) for i in range(n)))
    if ggml_type == "F16":
        return struct.pack("<%de" % n, *(0.02 * (((i + salt) % 11) - 5) for i in range(n)))
    if ggml_type == "BF16":
        f32 = struct.pack("<%df" % n, *(0.02 * (((i + salt) % 11) - 5) for i in range(n)))
        return b"".join(f32[i + 2:i + 4] for i in range(0, len(f32), 4))
    codes = 16 if ggml_type == "Q4_0" else 32
    return b"".join(struct.pack("<e", 0.01) +
                    bytes((salt + 37 * b + 11 * j) % 256 for j in range(codes))
                    for b in range(n // 32))


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, kind, value)]; tensors: [(name, ggml type, ne)] with ne innermost first."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, kind, value in kvs:
        type_id, body = gguf_value(kind, value)
        out += gguf_string(key) + struct.pack("<I", type_id) + body
    data = b""
    for salt, (name, ggml_type, ne) in enumerate(tensors):
        type_id, block_elems, block_bytes = GGML_TYPES[ggml_type]
        n = 1
        for d in ne:
            n *= d
        payload = ggml_bytes(ggml_type, n, salt)
        assert ne[0] % block_elems == 0 and len(payload) == n // block_elems * block_bytes
        data += b"\0" * (-len(data) % alignment)
        out += gguf_string(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", type_id, len(data))
        data += payload
    return out + b"\0" * (-len(out) % alignment) + data


def llama_kvs(hidden, layers, heads, kv_heads, ffn, extra=()):
    return [("general.architecture", "str", "llama"), ("general.name", "str", "hllm fuzz seed"),
            ("llama.context_length", "u32", 256), ("llama.embedding_length", "u32", hidden),
            ("llama.block_count", "u32", layers), ("llama.feed_forward_length", "u32", ffn),
            ("llama.attention.head_count", "u32", heads),
            ("llama.attention.head_count_kv", "u32", kv_heads),
            ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5),
            ("llama.rope.freq_base", "f32", 500000.0)] + list(extra)


def llama_tensors(vocab, hidden, head_dim, heads, kv_heads, ffn, types, output=None):
    """types: ggml types of q, k, v, o, gate, up, down (one layer); output: lm_head's, or tied."""
    q, k, v, o, gate, up, down = types
    t = [("token_embd.weight", "Q4_0", [hidden, vocab]), ("output_norm.weight", "F32", [hidden]),
         ("blk.0.attn_norm.weight", "F32", [hidden]),
         ("blk.0.attn_q.weight", q, [hidden, heads * head_dim]),
         ("blk.0.attn_k.weight", k, [hidden, kv_heads * head_dim]),
         ("blk.0.attn_v.weight", v, [hidden, kv_heads * head_dim]),
         ("blk.0.attn_output.weight", o, [heads * head_dim, hidden]),
         ("blk.0.ffn_norm.weight", "F32", [hidden]),
         ("blk.0.ffn_gate.weight", gate, [hidden, ffn]), ("blk.0.ffn_up.weight", up, [hidden, ffn]),
         ("blk.0.ffn_down.weight", down, [ffn, hidden])]
    if output:
        t.append(("output.weight", output, [hidden, vocab]))
    return t


# A tiny Llama with the tiny tokenizer above inside (tokenizer.ggml.*: byte-level tokens, merges,
# token types, special ids): hidden 32, 1 layer, 2 query heads / 1 KV head, tied embeddings.
tiny = json.loads(tiny_tokenizer())
tokens = sorted(tiny["model"]["vocab"], key=tiny["model"]["vocab"].get)
token_types = [1] * len(tokens)
for added in tiny["added_tokens"]:
    assert added["id"] == len(tokens)
    tokens.append(added["content"])
    token_types.append(3 if added["special"] else 4)
special = {t["content"]: t["id"] for t in tiny["added_tokens"]}
tokenizer_kvs = [
    ("tokenizer.ggml.model", "str", "gpt2"), ("tokenizer.ggml.pre", "str", "llama-bpe"),
    ("tokenizer.ggml.tokens", "arr:str", tokens),
    ("tokenizer.ggml.token_type", "arr:i32", token_types),
    ("tokenizer.ggml.merges", "arr:str", tiny["model"]["merges"]),
    ("tokenizer.ggml.bos_token_id", "u32", special["<|begin_of_text|>"]),
    ("tokenizer.ggml.eos_token_id", "u32", special["<|end_of_text|>"]),
    ("tokenizer.ggml.eot_token_id", "u32", special["<|eot_id|>"]),
    ("tokenizer.chat_template", "str",
     "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
     "{{ m['content'] }}<|eot_id|>{% endfor %}")]
out("gguf", "tiny_llama_q4_0.gguf", gguf(
    llama_kvs(32, 1, 2, 1, 64, [("general.file_type", "u32", 2)] + tokenizer_kvs),
    llama_tensors(len(tokens), 32, 16, 2, 1, 64,
                  ["Q4_0", "Q4_0", "Q8_0", "Q4_0", "Q4_0", "Q8_0", "Q4_0"])))

# A tiny Llama without a tokenizer: GGUF v2, alignment 64, untied Q8_0 output, F16/BF16 K/V,
# head size and vocabulary given, YaRN keys and a rope_freqs tensor (llama3 scaling).
out("gguf", "tiny_llama_q8_0_v2.gguf", gguf(
    llama_kvs(32, 1, 2, 1, 64, [
        ("general.alignment", "u32", 64), ("llama.vocab_size", "u32", 64),
        ("llama.attention.key_length", "u32", 16), ("llama.attention.value_length", "u32", 16),
        ("llama.rope.dimension_count", "u32", 16), ("llama.rope.scaling.type", "str", "yarn"),
        ("llama.rope.scaling.factor", "f32", 4.0),
        ("llama.rope.scaling.original_context_length", "u32", 64),
        ("llama.rope.scaling.attn_factor", "f32", 1.0),
        ("tokenizer.ggml.bos_token_id", "u32", 1), ("tokenizer.ggml.eos_token_id", "u32", 2)]),
    llama_tensors(64, 32, 16, 2, 1, 64, ["Q8_0", "F16", "BF16", "Q8_0", "Q8_0", "Q8_0", "Q8_0"],
                  output="Q8_0") + [("rope_freqs.weight", "F32", [8])],
    version=2, alignment=64))

# Every metadata value type, arrays of strings and numbers, several tensor types; no model.
out("gguf", "all_types.gguf", gguf(
    [("general.architecture", "str", "test"), ("test.u8", "u8", 200), ("test.i8", "i8", -5),
     ("test.u16", "u16", 60000), ("test.i16", "i16", -30000), ("test.u32", "u32", 4000000000),
     ("test.i32", "i32", -2000000000), ("test.f32", "f32", 1.5), ("test.bool", "bool", True),
     ("test.u64", "u64", 2 ** 40 + 3), ("test.i64", "i64", -2 ** 40), ("test.f64", "f64", -0.125),
     ("test.strings", "arr:str", ["a", "", "h\u00e9llo", "x y"]),
     ("test.ints", "arr:i32", [1, -2, 300000]), ("test.u16s", "arr:u16", [7, 65535]),
     ("test.bools", "arr:bool", [True, False]), ("test.f64s", "arr:f64", [0.5, -1e300]),
     ("test.no_strings", "arr:str", []), ("general.alignment", "u32", 64)],
    [("weight.f32", "F32", [3, 2]), ("weight.q4_0", "Q4_0", [64, 2]), ("weight.f16", "F16", [4]),
     ("weight.bf16", "BF16", [2, 1, 1, 2]), ("weight.q8_0", "Q8_0", [32])],
    alignment=64))
out("gguf", "empty.gguf", gguf([], []))
