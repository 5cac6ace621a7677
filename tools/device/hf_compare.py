#!/usr/bin/env python3
"""Full-size correctness check of `hllm logits` against HF transformers, on the GPU.

    python3 tools/device/hf_compare.py --hllm build-device/hllm [--layers 4] [--tokens 64]
        [--json out.json] [--keep] [--dir DIR] [-- extra hllm args]

Builds a seeded random-weight checkpoint with Llama-3-8B shapes (hidden 4096, intermediate 14336,
32/8 heads, vocab 128256, llama3 RoPE) but only --layers decoder layers (default 4, to fit the
device-time budget), saves it as bf16 safetensors, runs HF's forward in bf16 on the GPU, then runs
`<hllm> logits -m DIR --ids ... -o OUT --device cuda` and compares the F32 logits.

Reference logits: HF bf16 forward up to the final norm, then lm_head as an fp32 matmul of those bf16
hidden states (HF's own bf16 logits are rounded to bf16 -- ulp 0.0625 at |x| >= 8 -- which makes
artificial argmax ties). An fp32 HF forward of the same weights is also reported, as the floor that
separates bf16 rounding from real errors: ours-vs-fp32 should be about hf_bf16-vs-fp32.
Exit status: 0 PASS, 1 FAIL or error.
"""
import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

try:
    import numpy as np
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as e:
    print(f"hf_compare: cannot import numpy/torch/transformers ({e})", flush=True)
    sys.exit(1)


def log(*a):
    print(*a, flush=True)


class Fail(Exception):
    pass


def die(msg):
    raise Fail(msg)


def make_config(layers):
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
    kw = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
              num_key_value_heads=8, num_hidden_layers=layers, vocab_size=128256,
              max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
              hidden_act="silu", bos_token_id=128000, eos_token_id=128001, use_cache=False)
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers 5.x
        kw["rope_parameters"] = dict(rope, rope_theta=500000.0)
    else:  # 4.x
        kw.update(rope_theta=500000.0, rope_scaling=rope)
    return LlamaConfig(**kw)  # save_pretrained records the model's dtype (checked after saving)


@torch.no_grad()
def build_checkpoint(config, directory, seed, lm_head_std):
    """Random weights, seeded, built on the GPU; saved with save_pretrained as bf16 safetensors."""
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # as from_pretrained does: inv_freq stays fp32
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old_dtype)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.weight"):
            p.normal_(0.0, 1.0, generator=gen)  # residual stream starts at RMS ~1
        elif name.startswith("lm_head"):
            p.normal_(0.0, lm_head_std, generator=gen)  # logit std ~ lm_head_std * sqrt(4096)
        elif p.dim() == 1:  # RMSNorm weights: 1 + noise, so a dropped norm weight shows up
            p.normal_(0.0, 0.1, generator=gen).add_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=gen)
    model.to(torch.bfloat16)  # no-op normally; inv_freq is not saved, the reload recomputes it
    try:
        model.save_pretrained(directory, safe_serialization=True)
    except TypeError:  # safe_serialization removed (safetensors is the only format)
        model.save_pretrained(directory)
    del model
    torch.cuda.empty_cache()


def load_hf(directory):
    # 5.x takes dtype=; 4.x takes torch_dtype= (and would silently keep fp32 given dtype=).
    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype" if major >= 5 else "torch_dtype": torch.bfloat16}
    model = LlamaForCausalLM.from_pretrained(directory, **kw).to("cuda").eval()
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.bfloat16}:
        die(f"HF loaded the checkpoint as {dtypes}, not bfloat16")
    return model


def inv_freq_dtype(model):
    rotary = getattr(model.model, "rotary_emb", None)
    return getattr(getattr(rotary, "inv_freq", None), "dtype", "?")


@torch.no_grad()
def hf_logits(model, ids):
    """fp32 logits [N, vocab]: the model's own-dtype forward to the final norm, fp32 lm_head."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    hidden = model.model(input_ids=ids[None], use_cache=False).last_hidden_state[0]
    return (hidden.float() @ model.lm_head.weight.float().T).cpu().numpy()


def compare(ours, ref):
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    a_ours, a_ref = ours.argmax(-1), ref.argmax(-1)
    mism = np.nonzero(a_ours != a_ref)[0]
    # For each argmax flip: how far below the reference's max is the reference logit we picked?
    gaps = (ref[mism, a_ref[mism]] - ref[mism, a_ours[mism]]) if len(mism) else np.zeros(0)
    return {"max_rel": float(diff.max() / np.abs(ref).max()),
            "mean_rel": float(diff.mean() / np.abs(ref).mean()),
            "argmax": float((a_ours == a_ref).mean()),
            "flips": int(len(mism)),
            "max_flip_gap": float(gaps.max()) if len(gaps) else 0.0,
            "ref_top2_gap_median": float(np.median(
                np.diff(np.sort(ref, axis=-1)[:, -2:], axis=-1)[:, 0]))}


def read_logits(path):
    try:
        from safetensors.numpy import load_file
        tensors = load_file(path)
    except Exception as e:  # noqa: BLE001 - e.g. no numpy backend: go through torch
        log(f"  (safetensors.numpy failed: {e}; using safetensors.torch)")
        from safetensors.torch import load_file
        tensors = {k: v.float().numpy() for k, v in load_file(path).items()}
    if "logits" not in tensors:
        die(f"{path} has no tensor 'logits' (has {sorted(tensors)})")
    return tensors["logits"]


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hllm", default="build-device/hllm", help="hllm binary")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers (8B has 32)")
    ap.add_argument("--tokens", type=int, default=64, help="number of random token ids")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--lm-head-std", type=float, default=0.05, help="gives logits std ~3")
    ap.add_argument("--tol", type=float, default=2e-2, help="max |ours-hf| / max |hf|")
    # Two correct bf16 implementations round differently (accumulation order, fused vs unfused
    # ops, where the residual is kept in fp32), so logits differ by ~1e-3 relative; rows whose top
    # two logits are that close flip argmax. Hence a 95% floor, not 100%; the flips' gaps print.
    ap.add_argument("--min-argmax", type=float, default=0.95, help="argmax agreement floor")
    ap.add_argument("--device", default="cuda", help="hllm --device value ('' omits the flag)")
    ap.add_argument("--dir", help="checkpoint folder, kept (default: a new one under /tmp, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint folder")
    ap.add_argument("--skip-fp32", action="store_true", help="skip the fp32 HF reference")
    ap.add_argument("--timeout", type=int, default=300, help="seconds allowed for hllm")
    ap.add_argument("--json", help="write the results as JSON to this path")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        log("hf_compare: FAIL: torch.cuda.is_available() is False")
        return 1
    hllm = os.path.abspath(args.hllm)
    if not os.access(hllm, os.X_OK):
        log(f"hf_compare: FAIL: hllm binary {hllm} not found or not executable (--hllm)")
        return 1
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.cuda.get_device_name(0)}")
    log(f"model: Llama-3-8B shapes, {args.layers} of 32 layers (device-time budget), "
        f"{args.tokens} random ids, seed {args.seed}")
    directory = args.dir or tempfile.mkdtemp(prefix="hllm_hf_compare_", dir="/tmp")
    os.makedirs(directory, exist_ok=True)
    out_path = os.path.join(tempfile.gettempdir(), f"hllm_hf_compare_logits_{os.getpid()}.safetensors")
    result = {"layers": args.layers, "tokens": args.tokens, "seed": args.seed, "dir": directory}
    try:
        t0 = time.time()
        torch.manual_seed(args.seed)
        build_checkpoint(make_config(args.layers), directory, args.seed, args.lm_head_std)
        with open(os.path.join(directory, "config.json")) as f:
            cfg = json.load(f)
        if "bfloat16" not in (cfg.get("dtype"), cfg.get("torch_dtype")):
            log(f"  config.json dtype {cfg.get('dtype')!r} / torch_dtype "
                f"{cfg.get('torch_dtype')!r}: setting torch_dtype to bfloat16")
            cfg["torch_dtype"] = "bfloat16"
            cfg.pop("dtype", None)
            with open(os.path.join(directory, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
        rope = cfg.get("rope_parameters") or dict(cfg.get("rope_scaling") or {},
                                                  rope_theta=cfg.get("rope_theta"))
        if rope.get("rope_type", rope.get("type")) != "llama3" or rope.get("rope_theta") != 500000.0:
            die(f"config.json rope is {rope}, expected llama3 with rope_theta 500000")
        log(f"checkpoint: {directory} ({time.time() - t0:.1f} s), files "
            f"{sorted(os.listdir(directory))}, dtype {cfg.get('dtype', cfg.get('torch_dtype'))}, "
            f"rope {rope}")

        t0 = time.time()
        model = load_hf(directory)
        ids = torch.randint(0, 128256, (args.tokens,),
                            generator=torch.Generator().manual_seed(args.seed + 1)).cuda()
        ids_text = ",".join(str(int(i)) for i in ids.tolist())
        ref = hf_logits(model, ids)
        torch.cuda.synchronize()
        log(f"HF bf16 forward: {time.time() - t0:.1f} s (incl. load), attn "
            f"{getattr(model.config, '_attn_implementation', '?')}, inv_freq "
            f"{inv_freq_dtype(model)}; logits std {ref.std():.3f}, "
            f"max|.| {np.abs(ref).max():.3f}")
        ref32 = None
        if not args.skip_fp32:
            ref32 = hf_logits(model.float(), ids)
        del model
        torch.cuda.empty_cache()

        ckpt_gb = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory)
                      if n.endswith(".safetensors")) / 1e9
        cmd = [hllm, "logits", "-m", directory, "--ids", ids_text, "-o", out_path]
        if args.device:
            cmd += ["--device", args.device]
        cmd += extra
        log("running: " + " ".join(cmd[:5]) + f" <{args.tokens} ids> " + " ".join(cmd[6:]))
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            die(f"hllm ran past {args.timeout} s")
        wall = time.time() - t0
        result["hllm_wall_s"] = wall
        hllm_output = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            log(hllm_output[-3000:])
            die(f"hllm exited {proc.returncode}")
        if hllm_output:
            log("  hllm output (tail): " + "\n  ".join(hllm_output.splitlines()[-5:]))
        log(f"hllm logits: {wall:.2f} s wall (incl. loading the {ckpt_gb:.2f} GB checkpoint)")
        ours = read_logits(out_path)
        if ours.shape != ref.shape:
            die(f"logits shape {ours.shape}, expected {ref.shape}")
        if not np.isfinite(ours).all():
            die(f"{int((~np.isfinite(ours)).sum())} non-finite logits")

        pairs = [("ours vs hf_bf16", compare(ours, ref))]
        if ref32 is not None:
            pairs += [("ours vs hf_fp32", compare(ours, ref32)),
                      ("hf_bf16 vs hf_fp32", compare(ref, ref32))]
        log(f"\n  {'comparison':<20} {'max_rel':>9} {'mean_rel':>9} {'argmax':>8} {'flips':>5}"
            f" {'max_flip_gap':>12} {'top2_gap_med':>12}")
        for name, m in pairs:
            log(f"  {name:<20} {m['max_rel']:9.2e} {m['mean_rel']:9.2e} {100 * m['argmax']:7.2f}%"
                f" {m['flips']:5d} {m['max_flip_gap']:12.4f} {m['ref_top2_gap_median']:12.4f}")
            result[name.replace(" ", "_")] = m
        main_m = pairs[0][1]
        ok = main_m["max_rel"] <= args.tol and main_m["argmax"] >= args.min_argmax
        result.update(passed=ok, tol=args.tol, min_argmax=args.min_argmax,
                      logits_std=float(ref.std()))
        log(f"\nhf_compare: {'PASS' if ok else 'FAIL'}: max_rel {main_m['max_rel']:.2e} "
            f"(tol {args.tol:g}), argmax {100 * main_m['argmax']:.2f}% "
            f"(min {100 * args.min_argmax:g}%), {args.layers} layers, {args.tokens} tokens")
    except Fail as e:
        log(f"hf_compare: FAIL: {e}")
        result["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - report, clean up, exit 1
        log("hf_compare: FAIL: unexpected error:")
        traceback.print_exc(file=sys.stdout)
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        if os.path.exists(out_path):
            os.remove(out_path)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
            log(f"hf_compare: wrote {args.json}")
        if args.keep or args.dir:
            log(f"hf_compare: kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0 if result.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
