#!/usr/bin/env python3
"""Side-by-side baselines for the hllm CUDA kernels, measured with torch on the same card.

    python3 tools/device/torch_baselines.py [--json out.json] [--quick]

Sections: device-to-device copy bandwidth (the ceiling); torch's int4 GEMV (tinygemm,
aten._weight_int4pack_mm, group 128); cuBLAS bf16 GEMV; SDPA decode (flash backend, GQA 32/8);
causal prefill attention TFLOP/s (flash and cuDNN backends).

Timing: every case is captured into a CUDA graph of `inner` back-to-back calls (falls back to eager
launches when capture fails; the `mode` column says which), replayed after warm-up; the reported
time is the median over replays of (graph time / inner), from CUDA events. Where one call's working
set is under the L2 size (60 MB), inputs are rotated over enough copies to exceed 256 MB.
Bandwidth is in GB/s (1e9 bytes/s); "% copy" is relative to the measured copy bandwidth.
A failing case prints its exception and the script goes on.
"""
import argparse
import json
import math
import statistics
import sys
import time
import traceback

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"torch_baselines: cannot import torch ({e})", flush=True)
    sys.exit(1)

ROTATE_TARGET = 256e6
ROWS = []  # every result, for --json
COPY_GBPS = None


def log(*a):
    print(*a, flush=True)


def first_line(e, limit=160):
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def n_rotations(working_set_bytes):
    """Copies of the inputs needed so that cycling through them does not hit in L2."""
    # Rotating whenever one set is under 256 MB (not only under L2) also covers sets just above L2.
    if working_set_bytes >= ROTATE_TARGET:
        return 1
    return int(math.ceil(ROTATE_TARGET / working_set_bytes))


def time_per_call(fn, nrot, reps, inner=None):
    """Median seconds per fn(i) call; fn(i) uses input copy i % nrot. Returns (seconds, mode)."""
    inner = inner or max(nrot, 8)
    for i in range(3):  # warm-up + lazy init (cuBLAS handles, cuDNN plans) outside capture
        fn(i % nrot)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    mode = "graph"
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                fn(i % nrot)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(inner):
                fn(i % nrot)
        run = graph.replay
    except Exception as e:  # noqa: BLE001 - any capture failure: time eager launches instead
        torch.cuda.synchronize()
        mode = f"eager ({type(e).__name__})"

        def run():
            for i in range(inner):
                fn(i % nrot)

    for _ in range(2):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    return statistics.median(times), mode


def record(section, name, seconds, mode, nbytes=None, flops=None, note=""):
    row = {"section": section, "name": name, "time_us": seconds * 1e6, "mode": mode, "note": note}
    line = f"  {name:<34} {seconds * 1e6:10.1f} us"
    if nbytes is not None:
        gbps = nbytes / seconds / 1e9
        row.update(bytes=nbytes, gbps=gbps)
        line += f" {gbps:9.0f} GB/s"
        if COPY_GBPS:
            row["pct_copy"] = 100 * gbps / COPY_GBPS
            line += f" {row['pct_copy']:6.1f}% copy"
    if flops is not None:
        row.update(flops=flops, tflops=flops / seconds / 1e12)
        line += f" {row['tflops']:8.1f} TFLOP/s"
    line += f"  [{mode}]" + (f" {note}" if note else "")
    ROWS.append(row)
    log(line)


def failed(section, name, e):
    log(f"  {name:<34} FAILED: {first_line(e)}")
    ROWS.append({"section": section, "name": name, "error": f"{type(e).__name__}: {e}"})


def bench_copy(reps):
    global COPY_GBPS
    log("\n== device-to-device copy (1 GiB, bytes = read + write)")
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 256)
    dst = torch.empty_like(src)
    t, mode = time_per_call(lambda i: dst.copy_(src), 1, reps, inner=4)
    COPY_GBPS = 2 * n / t / 1e9
    record("copy", "copy 1 GiB", t, mode, nbytes=2 * n)
    del src, dst
    torch.cuda.empty_cache()


def pack_int4(w_uint8, tiles, fmt):
    """w_uint8: [N, K/2] bytes. fmt 'uint8' (torch >= 2.5) or 'int32' ([N, K/8], older torch)."""
    w = w_uint8 if fmt == "uint8" else w_uint8.view(torch.int32)
    return torch.ops.aten._convert_weight_to_int4pack(w, tiles)


def pick_int4_format(K, N):
    """First (innerKTiles, input format) for which convert + mm both run; (None, None) if none."""
    w = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda")
    sz = torch.rand(K // 128, N, 2, device="cuda").to(torch.bfloat16)
    x = torch.randn(1, K, dtype=torch.bfloat16, device="cuda")
    for fmt in ("uint8", "int32"):
        for tiles in (8, 4, 2):
            try:
                torch.ops.aten._weight_int4pack_mm(x, pack_int4(w, tiles, fmt), 128, sz)
                torch.cuda.synchronize()
                return tiles, fmt
            except Exception as e:  # noqa: BLE001
                log(f"  innerKTiles={tiles} {fmt} weight: {first_line(e)}")
    return None, None


def bench_int4(shapes, reps):
    log("\n== torch int4 GEMV: aten._weight_int4pack_mm, batch 1, group 128 "
        "(bytes = N*K/2 + scales&zeros N*K/128*4 + x + y)")
    tiles, fmt = pick_int4_format(4096, 4096)
    if tiles is None:
        failed("int4_gemv", "all shapes", RuntimeError("no innerKTiles/format combination works"))
        return
    log(f"  using innerKTiles={tiles}; {fmt} weight [N, K/2 bytes] -> _convert_weight_to_int4pack;"
        " scales&zeros bf16 [K/128, N, 2]")
    for K, N in shapes:
        name = f"int4 K={K} N={N}"
        try:
            nbytes = N * K // 2 + (K // 128) * N * 2 * 2 + K * 2 + N * 2
            nrot = n_rotations(nbytes)
            ws, szs = [], []
            for _ in range(nrot):
                w = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda")
                ws.append(pack_int4(w, tiles, fmt))
                szs.append((torch.rand(K // 128, N, 2, device="cuda") * 0.02).to(torch.bfloat16))
            del w
            x = torch.randn(1, K, dtype=torch.bfloat16, device="cuda")
            fn = lambda i: torch.ops.aten._weight_int4pack_mm(x, ws[i], 128, szs[i])  # noqa: E731
            t, mode = time_per_call(fn, nrot, reps)
            record("int4_gemv", name, t, mode, nbytes=nbytes, note=f"rot={nrot} tiles={tiles}")
            del ws, szs
        except Exception as e:  # noqa: BLE001
            failed("int4_gemv", name, e)
        torch.cuda.empty_cache()


def bench_bf16_gemv(shapes, reps):
    log("\n== cuBLAS bf16 GEMV via torch: x[1,K] @ W[N,K]^T (bytes = N*K*2 + x + y)")
    for K, N in shapes:
        name = f"bf16 K={K} N={N}"
        try:
            nbytes = N * K * 2 + K * 2 + N * 2
            nrot = n_rotations(nbytes)
            ws = [torch.randn(N, K, dtype=torch.bfloat16, device="cuda") * 0.02
                  for _ in range(nrot)]
            x = torch.randn(1, K, dtype=torch.bfloat16, device="cuda")
            t, mode = time_per_call(lambda i: F.linear(x, ws[i]), nrot, reps)
            record("bf16_gemv", name, t, mode, nbytes=nbytes, note=f"rot={nrot}")
            del ws
        except Exception as e:  # noqa: BLE001
            failed("bf16_gemv", name, e)
        torch.cuda.empty_cache()


def sdpa_variants(prefer):
    """(label, backend or None, gqa_mode) to try in order; gqa_mode 'native' uses enable_gqa."""
    from torch.nn.attention import SDPBackend
    backend = getattr(SDPBackend, prefer)
    return [(prefer.lower(), backend, "native"), (prefer.lower(), backend, "repeat"),
            ("default", None, "native"), ("default", None, "repeat")]


def make_sdpa_fn(q, k, v, backend, gqa_mode, causal):
    from torch.nn.attention import sdpa_kernel
    if gqa_mode == "repeat":
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    kw = {"enable_gqa": True} if gqa_mode == "native" else {}

    def fn(_i):
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)

    return fn


def first_working(q, k, v, prefer, causal):
    """(backend, gqa_mode, label) of the first SDPA variant that runs; notes every failure."""
    errors = []
    for label, backend, gqa in sdpa_variants(prefer):
        try:
            make_sdpa_fn(q, k, v, backend, gqa, causal)(0)
            torch.cuda.synchronize()
            if errors:
                log("    (" + "; ".join(errors) + ")")
            return backend, gqa, f"{label}/{'enable_gqa' if gqa == 'native' else 'repeat_kv'}"
        except Exception as e:  # noqa: BLE001
            errors.append(f"{label}/{gqa}: {first_line(e, 100)}")
    raise RuntimeError("no SDPA variant ran: " + "; ".join(errors))


def bench_decode(cases, reps):
    log("\n== SDPA decode: q[B,32,1,128], k/v[B,8,L,128] bf16, flash backend "
        "(bytes = K + V of the 8 real kv heads)")
    for B, L in cases:
        name = f"decode B={B} L={L}"
        try:
            kv_bytes = 2 * B * 8 * L * 128 * 2
            nrot = n_rotations(kv_bytes)
            q = torch.randn(B, 32, 1, 128, dtype=torch.bfloat16, device="cuda")
            kvs = [(torch.randn(B, 8, L, 128, dtype=torch.bfloat16, device="cuda"),
                    torch.randn(B, 8, L, 128, dtype=torch.bfloat16, device="cuda"))
                   for _ in range(nrot)]
            backend, gqa, label = first_working(q, *kvs[0], "FLASH_ATTENTION", causal=False)
            fns = [make_sdpa_fn(q, k, v, backend, gqa, False) for k, v in kvs]
            note = f"rot={nrot} {label}"
            if "repeat_kv" in label:
                note += " (kernel reads 4x the counted bytes)"
            t, mode = time_per_call(lambda i: fns[i](i), nrot, reps)
            record("sdpa_decode", name, t, mode, nbytes=kv_bytes, note=note)
            del kvs, fns
        except Exception as e:  # noqa: BLE001
            failed("sdpa_decode", name, e)
        torch.cuda.empty_cache()


def bench_prefill(seqs, reps):
    log("\n== causal prefill attention, B=1, 32 q / 8 kv heads, head_dim 128 "
        "(FLOPs = 4*S^2*128*32/2)")
    for S in seqs:
        q = torch.randn(1, 32, S, 128, dtype=torch.bfloat16, device="cuda")
        k = torch.randn(1, 8, S, 128, dtype=torch.bfloat16, device="cuda")
        v = torch.randn(1, 8, S, 128, dtype=torch.bfloat16, device="cuda")
        flops = 4 * S * S * 128 * 32 / 2
        for prefer in ("FLASH_ATTENTION", "CUDNN_ATTENTION"):
            name = f"prefill S={S} {prefer.split('_')[0].lower()}"
            try:
                backend, gqa, label = first_working(q, k, v, prefer, causal=True)
                fn = make_sdpa_fn(q, k, v, backend, gqa, True)
                t, mode = time_per_call(fn, 1, reps, inner=3)
                record("sdpa_prefill", name, t, mode, flops=flops, note=label)
                del fn
            except Exception as e:  # noqa: BLE001
                failed("sdpa_prefill", name, e)
            torch.cuda.empty_cache()
        del q, k, v
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write all results as JSON to this path")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shapes")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        log("torch_baselines: torch.cuda.is_available() is False; nothing to measure")
        return 1
    t0 = time.time()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 0)
    log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.name}, "
        f"{props.total_memory / 2**30:.0f} GiB, L2 {l2 / 1e6:.0f} MB, "
        f"cuDNN {torch.backends.cudnn.version()}")
    reps = 5 if args.quick else 15
    int4_shapes = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (4096, 14336)]
    sections = [
        ("copy", lambda: bench_copy(reps)),
        ("int4_gemv", lambda: bench_int4(int4_shapes[-2:] if args.quick else int4_shapes, reps)),
        ("bf16_gemv", lambda: bench_bf16_gemv([(4096, 14336), (4096, 128256)], reps)),
        ("sdpa_decode", lambda: bench_decode([(1, 16384), (64, 2048)], reps)),
        ("sdpa_prefill", lambda: bench_prefill([2048, 8192] if args.quick
                                               else [2048, 8192, 16384], reps)),
    ]
    for name, run in sections:
        try:
            run()
        except Exception as e:  # noqa: BLE001 - keep going with the other sections
            log(f"  section {name} FAILED:")
            traceback.print_exc(file=sys.stdout)
            ROWS.append({"section": name, "error": f"{type(e).__name__}: {e}"})
            torch.cuda.empty_cache()
    log(f"\ntorch_baselines: done in {time.time() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": props.name, "torch": torch.__version__, "copy_gbps": COPY_GBPS,
                       "rows": ROWS}, f, indent=1)
        log(f"torch_baselines: wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
