#!/usr/bin/env bash
# Compiles the project's CUDA translation units with `-Xptxas -v` and fails if any kernel spills
# registers to local memory (spill stores or spill loads > 0 bytes). No GPU needed.
#
# usage: tools/ptxas_check.sh [FILE.cu ...]      (run from anywhere; paths relative to the repo root)
#   default FILEs: tests/*_test.cu, bench/*_bench.cu, and one generated TU per kernels/hllm/**/*.cuh
#   (a header-only TU compiles only kernels that are not templates; the tests and benchmarks
#   instantiate the templates with the shapes that matter)
#
# environment:
#   HLLM_CUDA_ARCHS  architectures to check, default "80 86 89 90a" (CMakeLists.txt's list)
#   NVCC             default: nvcc on PATH, else /usr/local/cuda/bin/nvcc
#   JOBS             parallel compiles, default: number of cores
#
# Prints one line per kernel and architecture (registers, stack frame, spill bytes, name), then
# "ptxas check: OK" and exit 0, or the spilling kernels and exit 1; a compile error exits 2.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
archs=${HLLM_CUDA_ARCHS:-80 86 89 90a}
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
jobs=${JOBS:-$(nproc)}
[[ -x $nvcc ]] || { echo "ptxas_check: no nvcc (set NVCC)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sources=()
if (($#)); then
  for f in "$@"; do sources+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done
else
  shopt -s nullglob globstar
  sources+=("$root"/tests/*_test.cu "$root"/bench/*_bench.cu)
  for header in "$root"/kernels/hllm/**/*.cuh; do
    rel=${header#"$root"/kernels/}
    tu="$work/header_${rel//[^A-Za-z0-9]/_}.cu"
    printf '#include "%s"\n' "$rel" >"$tu"
    sources+=("$tu")
  done
fi
((${#sources[@]})) || { echo "ptxas_check: no CUDA sources found" >&2; exit 2; }

gencode=()
for a in $archs; do gencode+=("-gencode=arch=compute_$a,code=sm_$a"); done

# The same flags the CMake build gives CUDA sources (Release), plus the ptxas report.
flags=(-std=c++20 -O3 -DNDEBUG --expt-relaxed-constexpr -DHLLM_HAVE_CUDA=1
  -DHLLM_TEST_DATA="\"$root/tests/data\"" -DHLLM_RUNNER="\"$root/build/hllm\""
  -DHLLM_SOURCE_DIR="\"$root\"" -I"$root/include" -I"$root/kernels" "${gencode[@]}" -Xptxas -v)

compile_one() {  # source -> $work/<n>.log ; prints the source on failure
  local src=$1 log=$2
  if ! "$nvcc" "${flags[@]}" -c "$src" -o "${log%.log}.o" >"$log" 2>&1; then
    echo "ptxas_check: compile failed: $src" >&2
    grep -v '^ptxas info' "$log" | head -40 >&2
    return 1
  fi
}
echo "ptxas check: ${#sources[@]} translation unit(s), sm_{${archs// /,}}, $jobs job(s)"
failed=0
pids=()
for i in "${!sources[@]}"; do
  if ((${#pids[@]} >= jobs)); then  # at most $jobs compiles at a time: wait for the oldest
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
  compile_one "${sources[$i]}" "$work/$i.log" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
((failed == 0)) || { echo "ptxas check: FAILED (compile error)"; exit 2; }

demangle() { if command -v c++filt >/dev/null; then c++filt; else cat; fi; }

# ptxas -v prints, per function:
#   ptxas info : Compiling entry function '<mangled>' for 'sm_90a'        (kernels only)
#   ptxas info : Function properties for <mangled>
#       N bytes stack frame, N bytes spill stores, N bytes spill loads
#   ptxas info : Used N registers, ...                                    (kernels only)
cat "$work"/*.log | awk '
  /Compiling entry function/ { split($0, q, "\x27"); entry = q[2]; arch = q[4]; next }
  /Function properties for/  { fn = $NF; next }
  /bytes stack frame/ {
    stack = $1; st = $5; ld = $9
    if (fn != entry) {  # a non-inlined device function: report it only if it spills
      if (st + ld > 0) printf "%-7s %5s %6s %6s %6s  %s\n", "(func)", "-", stack, st, ld, fn
    } else { e_stack = stack; e_st = st; e_ld = ld }
    next
  }
  /Used [0-9]+ registers/ {
    for (k = 1; k <= NF; k++) if ($k == "Used") regs = $(k + 1)
    printf "%-7s %5s %6s %6s %6s  %s\n", arch, regs, e_stack, e_st, e_ld, entry
  }' | sort -u >"$work/table"

printf '%-7s %5s %6s %6s %6s  %s\n' arch regs stack spillS spillL kernel
demangle <"$work/table" | cut -c1-160
spills=$(awk '$4 + $5 > 0' "$work/table" | wc -l)
kernels=$(wc -l <"$work/table")
if ((spills > 0)); then
  echo "ptxas check: FAILED: $spills kernel/arch pair(s) spill registers to local memory:"
  awk '$4 + $5 > 0' "$work/table" | demangle
  exit 1
fi
echo "ptxas check: OK ($kernels kernel/arch pair(s), no spills)"
