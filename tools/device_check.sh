#!/usr/bin/env bash
# The project's device check, for a lent GPU machine (an H100/H200), run from the repository root.
# It answers the most important questions first, so a run cut short still says the most:
#   1. GPU tests (`ctest -L gpu`)
#   2. compute-sanitizer: memcheck on one gemv_q4, one gemm_q4 and one decode-attention case,
#      racecheck on one small gemm_q4 case, racecheck and synccheck on one small prefill case
#   3. end to end: `hllm bench --synthetic llama3-8b --quant q4 -p 512 -n 64 --batch 1,8`, then
#      `--batch 32 -n 8` (gemm_q4), then batch 1 with CUDA graphs off (HLLM_CUDA_GRAPHS=0), then the
#      prefill of 1k, 4k and 8k-token prompts (TTFT)
#   4. the CUDA kernel benchmarks (bench/*_bench.cu), filtered to the main Llama-3-8B shapes
#   5. ncu on one launch each: gemv_q4 (gate_up), gemm_q4 (gate_up, 64 tokens), the decode split
#      kernel, an 8k prefill
# then the benchmark rows, the key numbers (hllm bench's tok/s rows) and a summary table, last.
# Steps 1 and 3 always run (with their own timeouts, cut at the hard end: the budget + 90 s); step 2
# stops early enough to leave step 3 its reserve; steps 4 and 5 are skipped, or cut short, once the
# time budget is spent. With the default budget (420 s) the summary is out by ~515 s.
# torch's baselines and the HF comparison are a second, optional call: --baselines.
# The prebuilt-binary machinery (--prebuild, the source STAMP, their use on the GPU machine) is
# tools/device/prebuilt.sh, which this script sources.
#
# ---- How to run it -----------------------------------------------------------------------------------
# Here (no GPU), after the last source edit:
#   tools/device_check.sh --fetch-deps   # once: GoogleTest, Google Benchmark, nlohmann/json, CLI11
#                                        # (~0.75 MB of .deb) into build-deps/, for a build there
#   tools/device_check.sh --prebuild     # builds the GPU tests, benchmarks and the runner for sm_90a
#                                        # (+ compute_90 PTX), stripped and xz-packed into
#                                        # build-device-prebuilt/ with a STAMP of the sources; prints
#                                        # the size of what will travel (64 MiB limit, tracked files
#                                        # included) and the run call below
# On the GPU machine, one call of the device tool's `run`:
#   command:   OUT="$OUT" tools/device_check.sh
#   carry:     ["build-device-prebuilt", "build-deps"]
#   timeout_s: 540
# The prebuilt binaries are used when their STAMP matches the carried sources (a hash of every file
# that goes into them: run --prebuild again after any edit) and the card; else the script builds
# there (~2-5 minutes of device time, which the budget then takes from the later steps). What
# travels is limited to 64 MiB, tracked files included (~60 MiB, mostly tests/data): --prebuild
# prints the total and leaves build-deps out of the carry list it prints when both do not fit.
# Optional, second call:
#   command:   OUT="$OUT" tools/device_check.sh --baselines     (torch baselines + HF comparison)
#   carry:     ["build-device-prebuilt", "build-deps"]
#   timeout_s: 400
# What comes back under $OUT: device_check.log (everything), summary.txt (the last part) and
# results.tar.gz (ctest JUnit XML, benchmark JSON, hllm bench output, sanitizer logs, ncu reports);
# --baselines: baselines.log, torch_baselines.json, hf_compare.json.
#
# ---- Environment (all optional) ---------------------------------------------------------------------
#   OUT                     where the results go (see above); unset: build-device-results/ only
#   HLLM_CHECK_BUDGET_S     seconds after which the kernel benchmarks and ncu are skipped (and to
#                           which their timeouts are cut), default 420; nothing runs past it + 90 s:
#                           give the device tool's timeout_s at least the budget + 120
#   HLLM_E2E_RESERVE_S      seconds the sanitizer leaves before the budget's end for the end-to-end
#                           runs, default 120
#   HLLM_PREBUILT           auto (default): the prebuilt binaries when they match, else build;
#                           require: fail instead of building; off: always build
#   HLLM_CUDA_ARCHS         CMAKE_CUDA_ARCHITECTURES of a build there, and the card's arch for the
#                           prebuilt check; default: the card's (compute_cap 9.0 -> 90a)
#   HLLM_BUILD_DIR          a build there: default build-device
#   HLLM_BUILD_JOBS         parallel compiles: default all cores (a build there), half of them
#                           (--prebuild)
#   HLLM_PREBUILD_ARCHS     --prebuild's architectures, default "90a-real;90-virtual"
#   HLLM_CTEST_TIMEOUT_S    the whole `ctest -L gpu`, default 180 (each test: 120)
#   HLLM_SANITIZER_TIMEOUT_S  each compute-sanitizer run, default 60
#   HLLM_SANITIZE_GEMV / _GEMM / _GEMM_RACE / _DECODE / _PREFILL   --gtest_filter of the cases
#   HLLM_E2E_TIMEOUT_S      each hllm bench run, default 120
#   HLLM_BENCH_FILTER       --benchmark_filter regex for every benchmark binary; default: the main
#                           8B shapes (see DEFAULT_BENCH_FILTER); set but empty: every benchmark
#   HLLM_BENCH_MIN_TIME     --benchmark_min_time in seconds, default 0.05
#   HLLM_BENCH_TIMEOUT_S    each benchmark binary, default 60
#   HLLM_NCU_TIMEOUT_S      each ncu run, default 60
#   HLLM_HF_LAYERS          --baselines: decoder layers of the HF 8B-shape checkpoint, default 4
#   HLLM_SKIP_TESTS=1 / HLLM_SKIP_SANITIZER=1 / HLLM_SKIP_E2E=1 / HLLM_SKIP_BENCH=1 / HLLM_SKIP_NCU=1
#
# Exit status: 0 when every step that ran succeeded (skipped steps aside); 1 otherwise; 2 usage.
set -euo pipefail

DEBS=(libgtest-dev libbenchmark-dev libbenchmark1debian nlohmann-json3-dev libcli11-dev)
# In the repository root, matched by .gitignore's /build*/ (the prebuilt ones: tools/device/prebuilt.sh).
DEPS_DIR="build-deps"
RESULTS_DIR="build-device-results"
# Kernel benchmarks by default: gemv_q4 at batch 1 (every 8B linear) and 8 (qkv, down) with cuBLAS
# bf16 beside it; gemm_q4, cuBLAS bf16 and dequant + cuBLAS at 16, 64 and 1024 tokens (gate_up,
# down); decode attention at 1 x 16k and 64 x 2k, prefill attention at 8k.
DEFAULT_BENCH_FILTER='^(gemv_q4|cublas_gemv_bf16)/|^(gemm_q4|cublas_gemm_bf16|dequant_cublas)/(gate_up_fused|down)/[0-9x]+/tokens:(16|64|1024)/|batch:1/kv_len:16384/|batch:64/kv_len:2048/|start:0/n:8192/'

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# --prebuild, the source hashes and STAMP, gpu_tests/gpu_benches, and use_prebuilt.
# shellcheck source=SCRIPTDIR/device/prebuilt.sh disable=SC1091  # followed with shellcheck -x
source "$root/tools/device/prebuilt.sh"

usage() {
  echo "usage: tools/device_check.sh [--fetch-deps | --prebuild | --baselines]  (see the top of the script)"
}

say() { printf '\n==== %s [%ds]\n' "$*" "$SECONDS"; }
warn() { echo "device_check: $*" >&2; }

fetch_deps() {
  command -v apt-get >/dev/null || { warn "--fetch-deps needs apt-get"; exit 1; }
  mkdir -p "$DEPS_DIR"
  (cd "$DEPS_DIR" && apt-get download "${DEBS[@]}")
  local debs=("$DEPS_DIR"/*.deb)
  echo "device_check: ${#debs[@]} packages in $DEPS_DIR/ ($(du -sh "$DEPS_DIR" | cut -f1));" \
    "carry \"$DEPS_DIR\" to the GPU machine"
}

# ---- On the GPU machine: the binaries (the prebuilt ones: tools/device/prebuilt.sh) -------------------

# Unpacks the carried .deb files into a private prefix (never into /) and prints that prefix.
unpack_deps() {
  local prefix="$root/$DEPS_DIR/unpacked" deb tmp
  rm -rf "$prefix" && mkdir -p "$prefix"
  for deb in "$DEPS_DIR"/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$prefix"
    else  # a .deb is an ar archive holding data.tar.*
      tmp=$(mktemp -d)
      (cd "$tmp" && ar x "$root/$deb" && tar -xf data.tar.* -C "$prefix")
      rm -rf "$tmp"
    fi
  done
  echo "$prefix/usr"
}

# compute capability "9.0" -> CMake architecture "90a" (Hopper: wgmma/TMA need the arch-specific
# target), "8.9" -> "89".
native_arch() {
  local cc
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')
  [[ $cc =~ ^[0-9]+$ ]] || { warn "cannot read compute_cap (got '$cc')"; return 1; }
  if [[ $cc == 90 ]]; then echo 90a; else echo "$cc"; fi
}

# Configures and builds the GPU targets here; sets the same variables as use_prebuilt.
build_here() {
  local build=${HLLM_BUILD_DIR:-build-device} prefix="" t0=$SECONDS
  local jobs=${HLLM_BUILD_JOBS:-$(nproc)}
  if compgen -G "$DEPS_DIR/*.deb" >/dev/null; then
    prefix=$(unpack_deps)
    export LD_LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "dependencies: carried packages unpacked under $prefix"
  else
    echo "dependencies: from the system (no $DEPS_DIR/*.deb; see --fetch-deps)"
  fi
  say "configure ($build, CMAKE_CUDA_ARCHITECTURES=$arch)"
  local -a cmake_args=(-S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch"
    -DHLLM_BUILD_TESTS=ON -DHLLM_BUILD_BENCH=ON
    # The device machine has no registry: no cpp-httplib for serve, no install test of the package.
    -DHLLM_SERVE=OFF -DHLLM_INSTALL=OFF)
  command -v ninja >/dev/null && [[ ! -f $build/CMakeCache.txt ]] && cmake_args+=(-G Ninja)
  [[ -n $prefix ]] && cmake_args+=(-DCMAKE_PREFIX_PATH="$prefix")
  if ! cmake "${cmake_args[@]}"; then
    warn "configure failed (missing GTest/benchmark/nlohmann_json/CLI11? run" \
      "'tools/device_check.sh --fetch-deps' where apt works and carry $DEPS_DIR)"
    summary+=("configure|FAILED|$((SECONDS - t0))")
    return 1
  fi
  summary+=("configure|ok|$((SECONDS - t0))")
  local -a tests benches targets
  mapfile -t tests < <(gpu_tests)
  mapfile -t benches < <(gpu_benches)
  targets=(hllm_runner "${tests[@]}" "${benches[@]}")
  say "build: ${targets[*]}"
  t0=$SECONDS
  if ! cmake --build "$build" -j "$jobs" --target "${targets[@]}"; then
    summary+=("build|FAILED|$((SECONDS - t0))")
    return 1
  fi
  summary+=("build (${#tests[@]} gpu tests, ${#benches[@]} benches)|ok|$((SECONDS - t0))")
  BIN_SOURCE="built here ($build, $arch)"
  HLLM_BIN="$root/$build/hllm" TEST_DIR="$root/$build/tests" BENCH_DIR="$root/$build/bench"
  CTEST_DIR="$root/$build"
}

# Device facts, the card's arch, and the binaries (prebuilt or built here).
prepare() {
  # The GPU machine reaches no registry: make npm (the tokenizer fetch at configure time) fail at
  # once instead of retrying.
  export npm_config_offline=true
  say "device"
  date -u
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi || true
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv || true
  elif [[ -z ${HLLM_CUDA_ARCHS:-} ]]; then
    warn "nvidia-smi not found: this is not a GPU machine (set HLLM_CUDA_ARCHS to go on anyway)"
    return 1
  fi
  echo "cores: $(nproc)"
  { command -v nvcc >/dev/null && nvcc --version | tail -n2; } ||
    { [[ -x /usr/local/cuda/bin/nvcc ]] && /usr/local/cuda/bin/nvcc --version | tail -n2; } ||
    echo "nvcc: not found"
  arch=${HLLM_CUDA_ARCHS:-$(native_arch || true)}
  [[ -n $arch ]] || return 1
  echo "card arch: $arch"

  local mode=${HLLM_PREBUILT:-auto} t0=$SECONDS
  say "binaries (HLLM_PREBUILT=$mode)"
  if [[ $mode != off ]] && use_prebuilt; then
    summary+=("binaries: prebuilt|ok|$((SECONDS - t0))")
  elif [[ $mode == require ]]; then
    summary+=("binaries: prebuilt (HLLM_PREBUILT=require)|FAILED|$((SECONDS - t0))")
    return 1
  else
    [[ $mode != off ]] && summary+=("binaries: prebuilt not usable, see log|building|$((SECONDS - t0))")
    build_here || return 1
  fi
  echo "binaries: $BIN_SOURCE"
}

# ---- Steps --------------------------------------------------------------------------------------------

# run_step NAME OWN_TIMEOUT RESERVE LOG CMD...: runs CMD with timeout min(OWN_TIMEOUT, time left
# until RESERVE seconds before the end of the budget), skipped when under 10 s would be left. RESERVE
# "-": a step that runs whatever the budget, cut only at the hard end (budget + 90 s), so that the
# summary still comes out inside the device tool's timeout_s. Output goes to the log and to LOG
# ("-": none). Records "name|status|seconds" in the caller's `summary`, sets `failed` and `step_rc`.
run_step() {
  local name=$1 limit=$2 reserve=$3 log=$4 t0=$SECONDS left status why
  shift 4
  step_rc=0
  if [[ $reserve == - ]]; then
    left=$((hard_end - SECONDS)) why="hard end ${hard_end}s"
  else
    left=$((budget - reserve - SECONDS)) why="budget ${budget}s"
  fi
  if ((left < 10)); then
    summary+=("$name|skipped ($why)|0")
    step_rc=-1
    return 0
  fi
  ((left < limit)) && limit=$left
  say "$name (limit ${limit}s)"
  if [[ $log == - ]]; then
    timeout -k 10 "$limit" "$@" || step_rc=$?
  else
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$log" || step_rc=$?
  fi
  case $step_rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT (${limit}s)"; failed=1 ;;
    *) status="FAILED (exit $step_rc)"; failed=1 ;;
  esac
  summary+=("$name|$status|$((SECONDS - t0))")
}

# Replaces the status of the last summary row.
set_last_status() {
  local last=${summary[-1]} name secs
  name=${last%%|*}
  secs=${last##*|}
  summary[-1]="$name|$1|$secs"
}

find_tool() {  # find_tool NAME: the CUDA tool on PATH or in the usual folders
  local p
  command -v "$1" 2>/dev/null && return 0
  for p in "/usr/local/cuda/bin/$1" "/usr/local/cuda/$1/$1" /opt/nvidia/nsight-compute/*/"$1"; do
    [[ -x $p ]] && { echo "$p"; return 0; }
  done
  return 1
}

step_tests() {
  local -a args=(--test-dir "$CTEST_DIR" -L gpu --output-on-failure --timeout 120 -j 4
    --output-junit "$results/ctest_gpu.xml")
  run_step "ctest -L gpu" "${HLLM_CTEST_TIMEOUT_S:-180}" - "$results/ctest_gpu.txt" ctest "${args[@]}"
  # A test binary that finds no usable GPU prints "skipped: no GPU (...)" and exits 0: on the GPU
  # machine that is a failure (a driver too old for the runtime, say). CTest's JUnit file holds
  # every test's output.
  local skipped name
  skipped=$(grep -c 'skipped: no GPU' "$results/ctest_gpu.xml" 2>/dev/null || true)
  if ((${skipped:-0} > 0)); then
    set_last_status "FAILED ($skipped binaries: no GPU)"
    failed=1
    grep -m1 -o 'skipped: no GPU[^<]*' "$results/ctest_gpu.xml" || true
  fi
  # The failing tests, one row each, so that a log cut short still names them.
  while read -r name; do
    summary+=("  failed: $name|FAILED|-")
  done < <(sed -n '/The following tests FAILED:/,$ s/^[[:space:]]*[0-9]* - \([^ ]*\) .*/\1/p' \
    "$results/ctest_gpu.txt" 2>/dev/null || true)
  return 0
}

step_sanitizer() {
  local san log tool binary filter label
  if ! san=$(find_tool compute-sanitizer); then
    summary+=("compute-sanitizer|skipped (not installed)|0")
    return 0
  fi
  local limit=${HLLM_SANITIZER_TIMEOUT_S:-60} reserve=${HLLM_E2E_RESERVE_S:-120}
  local -a runs=(
    "memcheck|gemv_q4_test|${HLLM_SANITIZE_GEMV:-Shapes/GemvQ4.MatchesDoubleReferenceForEveryBatch/1000x20_act}"
    "memcheck|gemm_q4_test|${HLLM_SANITIZE_GEMM:-Odd/GemmQ4.MatchesCpuInt4Matmul/1000x20_act}"
    "racecheck|gemm_q4_test|${HLLM_SANITIZE_GEMM_RACE:-Odd/GemmQ4.MatchesCpuInt4Matmul/384x20}"
    "memcheck|attn_decode_paged_test|${HLLM_SANITIZE_DECODE:-AttnDecodePaged.Batch3Fixture}"
    "racecheck|attn_prefill_test|${HLLM_SANITIZE_PREFILL:-AttnPrefill.MaxKvLenAboveTheChunk}"
    "synccheck|attn_prefill_test|${HLLM_SANITIZE_PREFILL:-AttnPrefill.MaxKvLenAboveTheChunk}")
  local run
  for run in "${runs[@]}"; do
    IFS='|' read -r tool binary filter <<<"$run"
    label="sanitizer $tool ${binary%_test}"
    log="$results/sanitizer_${tool}_${binary%_test}.log"
    run_step "$label" "$limit" "$reserve" "$log" "$san" --tool "$tool" --error-exitcode 86 \
      --print-limit 20 "$TEST_DIR/$binary" --gtest_filter="$filter"
    ((step_rc < 0)) && continue
    if grep -q '^skipped: no GPU' "$log"; then
      set_last_status "FAILED (no GPU)"
      failed=1
    elif grep -q 'PASSED  \] 0 tests' "$log"; then
      set_last_status "FAILED (no test matches)"
      failed=1
    elif ((step_rc == 86)); then
      set_last_status "FAILED ($(grep -o 'ERROR SUMMARY: [0-9]* error[s]*' "$log" | tail -n1 || echo errors))"
    fi
  done
  return 0
}

step_e2e() {
  local limit=${HLLM_E2E_TIMEOUT_S:-120}
  local -a base=(bench --synthetic llama3-8b --quant q4 -p 512 --device cuda)
  run_step "hllm bench 8B q4 batch 1,8 -n 64" "$limit" - "$results/e2e_1_b1_b8.txt" \
    "$HLLM_BIN" "${base[@]}" -n 64 --batch 1,8
  run_step "hllm bench 8B q4 batch 32 -n 8" "$limit" - "$results/e2e_2_b32.txt" \
    "$HLLM_BIN" "${base[@]}" -n 8 --batch 32
  run_step "hllm bench 8B q4 batch 1, graphs off" "$limit" - "$results/e2e_3_b1_nographs.txt" \
    env HLLM_CUDA_GRAPHS=0 "$HLLM_BIN" "${base[@]}" -n 64 --batch 1
  run_step "hllm bench 8B q4 TTFT 1k/4k/8k prompts" "$limit" - "$results/e2e_4_ttft.txt" \
    "$HLLM_BIN" bench --synthetic llama3-8b --quant q4 --device cuda -p 1024,4096,8192 -n 1 --batch 1
  return 0
}

step_benches() {
  local filter=${HLLM_BENCH_FILTER-$DEFAULT_BENCH_FILTER} name out
  local min_time=${HLLM_BENCH_MIN_TIME:-0.05}
  mkdir -p "$results/bench"
  echo "benchmark filter: ${filter:-(all)}"
  for name in $(gpu_benches); do
    out="$results/bench/$name"
    run_step "bench $name" "${HLLM_BENCH_TIMEOUT_S:-60}" 0 "$out.txt" "$BENCH_DIR/$name" \
      --benchmark_min_time="$min_time" ${filter:+--benchmark_filter="$filter"} \
      --benchmark_counters_tabular=true --benchmark_out="$out.json" --benchmark_out_format=json
    ((step_rc < 0)) && continue
    if grep -q 'Failed to match any benchmarks' "$out.txt"; then
      set_last_status "ok (filter matches none)"
    elif grep -q '^skipped: no GPU' "$out.txt"; then
      set_last_status "FAILED (no GPU)"
      failed=1
    fi
  done
  return 0
}

step_ncu() {
  local ncu case label bench filter kernel skip report
  if ! ncu=$(find_tool ncu); then
    summary+=("ncu|skipped (not installed)|0")
    return 0
  fi
  # label|benchmark|filter|kernel|launches to skip (past the warm-up)
  local -a cases=(
    "gemv_q4 gate_up b1|int4_matmul_bench|^gemv_q4/gate_up/4096x14336/batch:1/|gemv_q4_kernel|10"
    "gemm_q4 gate_up 64 tokens|int4_matmul_bench|^gemm_q4/gate_up_fused/4096x28672/tokens:64/|gemm_q4_kernel|10"
    "attn decode split 1x16k|attn_decode_paged_bench|batch:1/kv_len:16384/|attn_decode_paged_split_kernel|8"
    "attn prefill 8k|attn_prefill_bench|start:0/n:8192/|attn_prefill_kernel|1")
  mkdir -p "$results/ncu"
  for case in "${cases[@]}"; do
    IFS='|' read -r label bench filter kernel skip <<<"$case"
    report="$results/ncu/${kernel}"
    # --clock-control none: the card's clocks are left as they are (METHOD.md).
    run_step "ncu $label" "${HLLM_NCU_TIMEOUT_S:-60}" 0 "$report.txt" "$ncu" --clock-control none \
      --kernel-name "regex:$kernel" --launch-skip "$skip" --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section LaunchStats \
      --section Occupancy --export "$report" --force-overwrite \
      "$BENCH_DIR/$bench" --benchmark_filter="$filter" --benchmark_min_time=0.01
    ((step_rc < 0)) && continue
    if grep -q 'No kernels were profiled' "$report.txt"; then
      set_last_status "FAILED (no kernel profiled)"
      failed=1
    elif [[ -f $report.ncu-rep ]]; then
      "$ncu" --import "$report.ncu-rep" --page details | tee -a "$report.txt" || true
    fi
  done
  return 0
}

# hllm bench's own lines (model, device, the table) from each end-to-end step.
print_key_numbers() {
  local f any=0
  for f in "$results"/e2e_*.txt; do
    [[ -f $f ]] || continue
    ((any)) || say "key numbers: hllm bench --synthetic llama3-8b --quant q4 -p 512 (decode t/s = tok/s)"
    any=1
    echo "-- $(basename "$f" .txt)"
    grep -E '^(model:|device:| *batch +prompt| +[0-9]+ +[0-9]+ +[0-9]+ )|error' "$f" || echo "(no result rows)"
  done
  return 0
}

print_bench_rows() {
  local f
  compgen -G "$results/bench/*.txt" >/dev/null || return 0
  say "benchmark results"
  for f in "$results"/bench/*.txt; do
    echo "-- $(basename "$f" .txt)"
    grep -vE '^(Run on|CPU Caches|  L[0-9]|Load Average|\*\*\*|-{10,}|[0-9]{4}-[0-9]{2}-[0-9]{2}T)' "$f" || true
  done
}

print_summary() {
  local row step status secs
  printf '\n==== summary (total %ds, budget %ss; binaries: %s)\n%-52s %-30s %6s\n' "$SECONDS" \
    "${budget:-?}" "${BIN_SOURCE:-none}" step status seconds
  for row in "$@"; do
    IFS='|' read -r step status secs <<<"$row"
    printf '%-52s %-30s %6s\n' "$step" "$status" "$secs"
  done
}

# Everything under $results into $OUT/results.tar.gz (the device tool brings back 8 files at most).
pack_results() {
  [[ -n ${OUT:-} ]] || return 0
  tar -czf "$OUT/results.tar.gz" -C "$results" . || warn "could not pack $results"
}

main() {
  local budget=${HLLM_CHECK_BUDGET_S:-420}
  local hard_end=$((budget + 90))
  local -a summary=()  # "step|status|seconds"
  local failed=0 step_rc=0 arch=""
  local BIN_SOURCE="" HLLM_BIN="" TEST_DIR="" BENCH_DIR="" CTEST_DIR=""
  local results="$root/$RESULTS_DIR"
  rm -rf "$results" && mkdir -p "$results"

  if ! prepare; then
    print_summary "${summary[@]}" | tee "${OUT:-$results}/summary.txt"
    pack_results
    return 1
  fi
  [[ ${HLLM_SKIP_TESTS:-0} == 1 ]] || step_tests
  [[ ${HLLM_SKIP_SANITIZER:-0} == 1 ]] || step_sanitizer
  [[ ${HLLM_SKIP_E2E:-0} == 1 ]] || step_e2e
  [[ ${HLLM_SKIP_BENCH:-0} == 1 ]] || step_benches
  [[ ${HLLM_SKIP_NCU:-0} == 1 ]] || step_ncu

  say "device state after the run"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used --format=csv || true
  fi
  pack_results
  print_bench_rows
  {
    print_key_numbers
    print_summary "${summary[@]}"
  } | tee "${OUT:-$results}/summary.txt"
  return "$failed"
}

baselines() {
  local budget=${HLLM_CHECK_BUDGET_S:-420} limit=${HLLM_E2E_TIMEOUT_S:-170}
  local hard_end=$((budget + 90))
  local -a summary=()
  local failed=0 step_rc=0 arch=""
  local BIN_SOURCE="" HLLM_BIN="" TEST_DIR="" BENCH_DIR="" CTEST_DIR=""
  local results="$root/$RESULTS_DIR"
  rm -rf "$results" && mkdir -p "$results"
  if ! command -v python3 >/dev/null; then
    warn "--baselines needs python3 with torch and transformers"
    return 1
  fi
  if ! prepare; then
    print_summary "${summary[@]}"
    return 1
  fi
  local json_dir=${OUT:-$results}
  run_step "torch baselines" "$limit" - - env PYTHONUNBUFFERED=1 python3 \
    tools/device/torch_baselines.py --quick --json "$json_dir/torch_baselines.json"
  run_step "HF 8B-shape comparison" "$limit" - - env PYTHONUNBUFFERED=1 python3 \
    tools/device/hf_compare.py --hllm "$HLLM_BIN" --layers "${HLLM_HF_LAYERS:-4}" \
    --json "$json_dir/hf_compare.json"
  print_summary "${summary[@]}"
  return "$failed"
}

# Runs FUNCTION, its output also into $OUT/LOG when OUT is set.
logged() {
  if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT"
    "$1" 2>&1 | tee "$OUT/$2"  # pipefail: the script exits with the function's status
  else
    "$1"
  fi
}

case ${1:-} in
  --fetch-deps) fetch_deps ;;
  --prebuild) prebuild ;;
  --baselines) logged baselines baselines.log ;;
  -h | --help) usage; sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' ;;
  "") logged main device_check.log ;;
  *) usage >&2; exit 2 ;;
esac
