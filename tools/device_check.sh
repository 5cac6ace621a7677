#!/usr/bin/env bash
# The project's one device check: builds the CUDA parts for the card at hand, runs every GPU test
# (`ctest -L gpu`) and every CUDA benchmark (bench/*_bench.cu), and prints a summary table last.
# Meant for a lent GPU machine, from the repository root, inside a 15-minute device budget.
#
#   here (no GPU), once:   tools/device_check.sh --fetch-deps
#       downloads the Debian packages the build needs (GoogleTest, Google Benchmark, nlohmann/json,
#       CLI11: ~1 MB) into build-deps/, which .gitignore's /build*/ already ignores. The GPU machine
#       cannot reach a package registry, so the run carries them.
#   on the GPU machine:    tools/device_check.sh          (device tool: carry ["build-deps"])
#
# environment (all optional):
#   OUT                      folder for the results: device_check.log, ctest_gpu.xml, bench_json.tar.gz
#   HLLM_CUDA_ARCHS          CMAKE_CUDA_ARCHITECTURES; default: the card's (compute_cap 9.0 -> 90a)
#   HLLM_BUILD_DIR           default build-device
#   HLLM_BENCH_MIN_TIME      Google Benchmark --benchmark_min_time in seconds, default 0.05
#   HLLM_BENCH_FILTER        --benchmark_filter regex, default: all
#   HLLM_BENCH_TIMEOUT_S     wall-clock limit per benchmark binary, default 120
#   HLLM_CHECK_BUDGET_S      benchmarks still to run are skipped once this many seconds have
#                            passed since the start, default 420 (7 of the 15 device minutes)
#   HLLM_E2E_TIMEOUT_S       limit for each end-to-end step (hllm bench, torch baselines, HF
#                            comparison), default 150
#   HLLM_E2E_BATCHES         hllm bench --batch list, default 1,8,32
#   HLLM_HF_LAYERS           decoder layers of the HF 8B-shape comparison checkpoint, default 4
#   HLLM_SKIP_TESTS=1 / HLLM_SKIP_BENCH=1 / HLLM_SKIP_E2E=1
#
# Exit status: 0 when the build, every GPU test and every benchmark succeeded; 1 otherwise.
set -euo pipefail

DEBS=(libgtest-dev libbenchmark-dev libbenchmark1debian nlohmann-json3-dev libcli11-dev)
DEPS_DIR="build-deps"  # in the repository root; matched by .gitignore's /build*/

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

fetch_deps() {
  command -v apt-get >/dev/null || { echo "device_check: --fetch-deps needs apt-get" >&2; exit 1; }
  mkdir -p "$DEPS_DIR"
  (cd "$DEPS_DIR" && apt-get download "${DEBS[@]}")
  local debs=("$DEPS_DIR"/*.deb)
  echo "device_check: ${#debs[@]} packages in $DEPS_DIR/ ($(du -sh "$DEPS_DIR" | cut -f1));" \
    "carry \"$DEPS_DIR\" to the GPU machine"
}

say() { printf '\n==== %s [%ds]\n' "$*" "$SECONDS"; }

# run_step NAME TIMEOUT CMD...: runs one step unless the time budget is spent, records the result
# in the summary (the caller's `summary` and `failed`).
run_step() {
  local name=$1 limit=$2 t0=$SECONDS rc=0
  shift 2
  if ((SECONDS > budget)); then
    summary+=("$name|skipped (budget ${budget}s)|0")
    return 0
  fi
  say "$name"
  timeout "$limit" "$@" || rc=$?
  if ((rc == 0)); then
    summary+=("$name|ok|$((SECONDS - t0))")
  else
    summary+=("$name|FAILED (exit $rc)|$((SECONDS - t0))")
    failed=1
  fi
}

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
  [[ $cc =~ ^[0-9]+$ ]] || { echo "device_check: cannot read compute_cap (got '$cc')" >&2; return 1; }
  if [[ $cc == 90 ]]; then echo 90a; else echo "$cc"; fi
}

main() {
  local build=${HLLM_BUILD_DIR:-build-device}
  local min_time=${HLLM_BENCH_MIN_TIME:-0.05}
  local budget=${HLLM_CHECK_BUDGET_S:-420}
  local bench_timeout=${HLLM_BENCH_TIMEOUT_S:-120}
  local e2e_timeout=${HLLM_E2E_TIMEOUT_S:-150}
  local -a summary=()  # "step|status|seconds"
  local failed=0 t0 arch prefix=""

  # The GPU machine reaches no registry: make npm (the tokenizer fetch at configure time) fail at
  # once instead of retrying.
  export npm_config_offline=true
  say "device"
  date -u
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  elif [[ -z ${HLLM_CUDA_ARCHS:-} ]]; then
    echo "device_check: nvidia-smi not found: this is not a GPU machine (set HLLM_CUDA_ARCHS to build anyway)" >&2
    return 1
  fi
  echo "cores: $(nproc)"
  (command -v nvcc >/dev/null && nvcc --version | tail -n2) || /usr/local/cuda/bin/nvcc --version | tail -n2
  cmake --version | head -n1

  arch=${HLLM_CUDA_ARCHS:-$(native_arch)}
  echo "CMAKE_CUDA_ARCHITECTURES=$arch"

  if compgen -G "$DEPS_DIR/*.deb" >/dev/null; then
    prefix=$(unpack_deps)
    export LD_LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "dependencies: carried packages unpacked under $prefix"
  else
    echo "dependencies: from the system (no $DEPS_DIR/*.deb; see --fetch-deps)"
  fi

  # ---- configure + build -------------------------------------------------------------------------
  say "configure ($build)"
  t0=$SECONDS
  local -a cmake_args=(-S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch"
    -DHLLM_BUILD_TESTS=ON -DHLLM_BUILD_BENCH=ON
    # The device machine has no registry: no cpp-httplib for serve, no install test of the package.
    -DHLLM_SERVE=OFF -DHLLM_INSTALL=OFF
    # CMake < 3.26 does not know nvcc's C++20 flag; harmless where it does.
    -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20)
  command -v ninja >/dev/null && [[ ! -f $build/CMakeCache.txt ]] && cmake_args+=(-G Ninja)
  [[ -n $prefix ]] && cmake_args+=(-DCMAKE_PREFIX_PATH="$prefix")
  if ! cmake "${cmake_args[@]}"; then
    echo "device_check: configure failed (missing GTest/benchmark/nlohmann_json/CLI11? run" \
      "'tools/device_check.sh --fetch-deps' where apt works and carry build-deps)" >&2
    summary+=("configure|FAILED|$((SECONDS - t0))")
    print_summary "${summary[@]}"
    return 1
  fi
  summary+=("configure|ok|$((SECONDS - t0))")

  # The GPU targets only: test and benchmark executables are named after their sources. The runner
  # too, since GPU tests may drive it.
  local -a tests=() benches=() targets=(hllm_runner)
  local f
  for f in tests/*_test.cu; do [[ -e $f ]] && tests+=("$(basename "$f" .cu)"); done
  for f in bench/*_bench.cu; do [[ -e $f ]] && benches+=("$(basename "$f" .cu)"); done
  targets+=("${tests[@]}" "${benches[@]}")
  say "build: ${targets[*]}"
  t0=$SECONDS
  if ! cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"; then
    summary+=("build|FAILED|$((SECONDS - t0))")
    print_summary "${summary[@]}"
    return 1
  fi
  summary+=("build (${#tests[@]} gpu tests, ${#benches[@]} benches)|ok|$((SECONDS - t0))")

  # ---- GPU tests ---------------------------------------------------------------------------------
  if [[ ${HLLM_SKIP_TESTS:-0} != 1 ]]; then
    say "ctest -L gpu"
    t0=$SECONDS
    local -a ctest_args=(--test-dir "$build" -L gpu --output-on-failure --timeout 150 -j 2)
    [[ -n ${OUT:-} ]] && ctest_args+=(--output-junit "$OUT/ctest_gpu.xml")
    if ctest "${ctest_args[@]}"; then
      summary+=("ctest -L gpu|ok|$((SECONDS - t0))")
    else
      summary+=("ctest -L gpu|FAILED|$((SECONDS - t0))")
      failed=1
    fi
  fi

  # ---- CUDA benchmarks ---------------------------------------------------------------------------
  local json_dir="$build/bench_json" name rc
  rm -rf "$json_dir" && mkdir -p "$json_dir"
  if [[ ${HLLM_SKIP_BENCH:-0} != 1 ]]; then
    for name in "${benches[@]}"; do
      if ((SECONDS > budget)); then
        summary+=("bench $name|skipped (budget ${budget}s)|0")
        continue
      fi
      say "bench $name"
      t0=$SECONDS
      rc=0
      timeout "$bench_timeout" "$build/bench/$name" --benchmark_min_time="$min_time" \
        ${HLLM_BENCH_FILTER:+--benchmark_filter="$HLLM_BENCH_FILTER"} \
        --benchmark_counters_tabular=true \
        --benchmark_out="$json_dir/$name.json" --benchmark_out_format=json \
        | tee "$json_dir/$name.txt" || rc=$?
      if ((rc == 0)); then
        summary+=("bench $name|ok|$((SECONDS - t0))")
      else
        summary+=("bench $name|FAILED (exit $rc)|$((SECONDS - t0))")
        failed=1
      fi
    done
    if [[ -n ${OUT:-} ]] && compgen -G "$json_dir/*" >/dev/null; then
      tar -czf "$OUT/bench_json.tar.gz" -C "$json_dir" .
    fi
  fi

  # ---- end to end and baselines -------------------------------------------------------------------
  if [[ ${HLLM_SKIP_E2E:-0} != 1 ]]; then
    run_step "hllm bench llama3-8b q4" "$e2e_timeout" "$build/hllm" bench --synthetic llama3-8b \
      --quant q4 -p 512 -n 128 --batch "${HLLM_E2E_BATCHES:-1,8,32}" --device cuda
    if command -v python3 >/dev/null; then
      run_step "torch baselines" "$e2e_timeout" env PYTHONUNBUFFERED=1 python3 \
        tools/device/torch_baselines.py --quick ${OUT:+--json "$OUT/torch_baselines.json"}
      run_step "HF 8B-shape comparison" "$e2e_timeout" env PYTHONUNBUFFERED=1 python3 \
        tools/device/hf_compare.py --hllm "$build/hllm" --layers "${HLLM_HF_LAYERS:-4}" \
        ${OUT:+--json "$OUT/hf_compare.json"}
    fi
  fi

  say "device state after the run"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used --format=csv
  fi

  # Benchmark result rows again, so they sit in the last lines of the output.
  if compgen -G "$json_dir/*.txt" >/dev/null; then
    say "benchmark results"
    for f in "$json_dir"/*.txt; do
      echo "-- $(basename "$f" .txt)"
      grep -vE '^(Run on|CPU Caches|  L[0-9]|Load Average|\*\*\*|-{10,}|[0-9]{4}-[0-9]{2}-[0-9]{2}T)' "$f" || true
    done
  fi
  print_summary "${summary[@]}"
  return "$failed"
}

print_summary() {
  local row step status secs
  printf '\n==== summary (total %ds)\n%-52s %-24s %6s\n' "$SECONDS" step status seconds
  for row in "$@"; do
    IFS='|' read -r step status secs <<<"$row"
    printf '%-52s %-24s %6s\n' "$step" "$status" "$secs"
  done
}

if [[ ${1:-} == --fetch-deps ]]; then
  fetch_deps
elif [[ $# -gt 0 ]]; then
  echo "usage: tools/device_check.sh [--fetch-deps]" >&2
  exit 2
elif [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/device_check.log"  # pipefail: the script exits with main's status
else
  main
fi
