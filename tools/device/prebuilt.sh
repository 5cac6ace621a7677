# shellcheck shell=bash
# The device check's prebuilt binaries, sourced by tools/device_check.sh (the entry point: how to run
# it is at its top), never run on its own. --prebuild (prebuild) builds the GPU tests, the GPU
# benchmarks and the runner here, without a GPU, strips and xz-packs them into build-device-prebuilt/
# with a STAMP holding a hash of every source file that goes into them (source_files); on the GPU
# machine use_prebuilt unpacks them when that hash matches the carried sources and the card's
# architecture runs them, else the entry point builds there (build_here).
# The entry point provides say, warn, root (the repository root, also the working directory),
# DEPS_DIR and arch (the card's architecture); use_prebuilt sets its BIN_SOURCE, HLLM_BIN, TEST_DIR,
# BENCH_DIR and CTEST_DIR. gpu_tests and gpu_benches here name the GPU targets for both.
# The hash covers the binaries' sources only, not these scripts (*.sh): editing them leaves the
# prebuilt binaries current.

PREBUILT_DIR="build-device-prebuilt"  # in the repository root, matched by .gitignore's /build*/
PREBUILD_TREE="build-prebuild"    # --prebuild's CMake build tree (not carried)
PREBUILT_TAR="hllm-device-bin.tar.xz"
TRAVEL_LIMIT=$((64 * 1024 * 1024))  # the device tool's limit on what travels, tracked files included

# ---- Sources, stamps, targets -------------------------------------------------------------------------

# Every file that goes into the GPU tests, the GPU benchmarks and the runner, sorted; the same list
# here and on the GPU machine (which may have no .git).
source_files() {
  {
    find . -maxdepth 1 -name CMakeLists.txt
    find cmake models -type f \( -name '*.cmake' -o -name '*.in' \)
    find include kernels -type f \( -name '*.hpp' -o -name '*.h' -o -name '*.cuh' -o -name '*.inc' \)
    find tools -maxdepth 1 -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh' \)
    find tests bench -maxdepth 1 -type f \( -name CMakeLists.txt -o -name '*.cu' -o -name '*.cuh' \
      -o -name '*.hpp' -o -name '*.h' \)
  } | sed 's|^\./||' | LC_ALL=C sort
}

# "sha256  path" per source file.
source_hashes() { source_files | tr '\n' '\0' | xargs -0 sha256sum; }

# The value of KEY in a key=value file.
stamp_get() { sed -n "s/^$1=//p" "$2" | head -n1; }

# The GPU targets: test and benchmark executables are named after their sources.
gpu_tests() { local f; for f in tests/*_test.cu; do [[ -e $f ]] && basename "$f" .cu; done; return 0; }
gpu_benches() { local f; for f in bench/*_bench.cu; do [[ -e $f ]] && basename "$f" .cu; done; return 0; }

# ---- --prebuild: here, without a GPU ------------------------------------------------------------------

# Bytes that would travel to the GPU machine: tracked and untracked-not-ignored files plus $@.
travel_bytes() {
  local files carried=0 p
  files=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } |
    xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  for p in "$@"; do
    [[ -e $p ]] && carried=$((carried + $(du -sb "$p" | cut -f1)))
  done
  echo $((files + carried))
}

mib() { awk -v b="$1" 'BEGIN {printf "%.2f MiB", b / 1048576}'; }

# shellcheck disable=SC2154  # root: the entry point's
prebuild() {
  local archs=${HLLM_PREBUILD_ARCHS:-90a-real;90-virtual}
  local jobs=${HLLM_BUILD_JOBS:-$(( $(nproc) > 1 ? $(nproc) / 2 : 1 ))}
  local tree=$PREBUILD_TREE stage t0=$SECONDS name lib libs commit
  local nvcc
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  [[ -x $nvcc ]] || { warn "--prebuild needs nvcc (CUDA 13)"; exit 1; }
  if [[ -f $tree/CMakeCache.txt ]] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$root\$" "$tree/CMakeCache.txt"; then
    rm -rf "$tree"  # configured from another source path
  fi
  local -a tests benches targets
  mapfile -t tests < <(gpu_tests)
  mapfile -t benches < <(gpu_benches)
  targets=(hllm_runner "${tests[@]}" "${benches[@]}")
  # The stamp describes the sources as they were when the build started; an edit during the build
  # fails the prebuild below.
  local hashes
  hashes=$(source_hashes)

  say "prebuild: configure $tree for $archs"
  local -a cmake_args=(-S "$root" -B "$tree" -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$archs"
    -DHLLM_CUDA_TEST_ARCHITECTURES="$archs" -DHLLM_BUILD_TESTS=ON -DHLLM_BUILD_BENCH=ON
    -DHLLM_SERVE=OFF -DHLLM_INSTALL=OFF)
  command -v ninja >/dev/null && [[ ! -f $tree/CMakeCache.txt ]] && cmake_args+=(-G Ninja)
  # The npm tokenizer fetch at configure time is for CPU tests only: skip it.
  npm_config_offline=true cmake "${cmake_args[@]}"

  say "prebuild: build ${targets[*]} (-j $jobs)"
  cmake --build "$tree" -j "$jobs" --target "${targets[@]}"
  local build_s=$((SECONDS - t0))
  if [[ $(source_hashes) != "$hashes" ]]; then
    rm -rf "$PREBUILT_DIR"
    warn "sources changed during the build: run --prebuild again (incremental)"
    diff <(echo "$hashes") <(source_hashes) | sed -n 's/^[<>] [0-9a-f]*  //p' | sort -u >&2 || true
    exit 1
  fi

  say "prebuild: strip and pack into $PREBUILT_DIR/"
  stage="$tree/device-stage"
  rm -rf "$stage" && mkdir -p "$stage/bin/tests" "$stage/bin/bench" "$stage/bin/lib"
  cp "$tree/hllm" "$stage/bin/hllm"
  for name in "${tests[@]}"; do cp "$tree/tests/$name" "$stage/bin/tests/"; done
  for name in "${benches[@]}"; do cp "$tree/bench/$name" "$stage/bin/bench/"; done
  strip "$stage"/bin/hllm "$stage"/bin/tests/* "$stage"/bin/bench/*
  # Libraries the GPU machine may lack: all but the C/C++ runtime and CUDA's (Google Benchmark).
  libs=$(ldd "$stage"/bin/hllm "$stage"/bin/tests/* "$stage"/bin/bench/* |
    awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*|libcudart|libcublas|libcublasLt|libcuda)\.so' || true)
  for lib in $libs; do
    cp -L "$lib" "$stage/bin/lib/"
    echo "bundled: $lib"
  done
  rm -rf "$PREBUILT_DIR" && mkdir -p "$PREBUILT_DIR"
  tar -C "$stage" -cf - bin | xz -9 -T1 >"$PREBUILT_DIR/$PREBUILT_TAR"
  echo "$hashes" >"$PREBUILT_DIR/SOURCES.sha256"
  commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  if [[ -n $(source_files | xargs git status --porcelain -- 2>/dev/null) ]]; then commit+="-dirty"; fi
  {
    echo "fingerprint=$(sha256sum <"$PREBUILT_DIR/SOURCES.sha256" | cut -d' ' -f1)"
    echo "archs=$archs"
    echo "commit=$commit"
    echo "nvcc=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\), V\([0-9.]*\).*/\2/p')"
    echo "built_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "built_on=$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"'), glibc $(ldd --version | head -n1 | awk '{print $NF}')"
    echo "tests=${tests[*]}"
    echo "benches=${benches[*]}"
    echo "unpacked_bytes=$(du -sb "$stage/bin" | cut -f1)"
  } >"$PREBUILT_DIR/STAMP"
  rm -rf "$stage"

  local size all deps_note=""
  size=$(du -sb "$PREBUILT_DIR" | cut -f1)
  rm -rf "${DEPS_DIR:?}/unpacked"  # a local build's unpacked packages: remade wherever needed
  local -a carry=("$PREBUILT_DIR")
  [[ -d $DEPS_DIR ]] && carry+=("$DEPS_DIR")
  all=$(travel_bytes "${carry[@]}")
  if ((all > TRAVEL_LIMIT)) && [[ -d $DEPS_DIR ]]; then
    carry=("$PREBUILT_DIR")
    all=$(travel_bytes "${carry[@]}")
    deps_note=" (without $DEPS_DIR: with it the tree is over the limit, and a build there cannot run)"
  fi
  say "prebuild: done"
  cat "$PREBUILT_DIR/STAMP"
  echo "build ${build_s}s, total ${SECONDS}s"
  echo "$PREBUILT_DIR/: $(mib "$size") ($(du -sh "$PREBUILT_DIR/$PREBUILT_TAR" | cut -f1) packed," \
    "$(mib "$(stamp_get unpacked_bytes "$PREBUILT_DIR/STAMP")") unpacked)"
  echo "travels with carry [${carry[*]}]: $(mib "$all") of the $(mib "$TRAVEL_LIMIT") limit$deps_note"
  if ((all > TRAVEL_LIMIT)); then
    warn "OVER the device tool's 64 MiB limit: the run would be refused"
    exit 1
  fi
  local quoted
  quoted=$(printf '"%s", ' "${carry[@]}")
  echo "run: command 'OUT=\"\$OUT\" tools/device_check.sh', carry [${quoted%, }], timeout_s 540"
}

# ---- On the GPU machine: the prebuilt binaries --------------------------------------------------------

# Whether binaries built for the CMake architectures $1 ("90a-real;90-virtual") run on a card of
# architecture $2 ("90a", "90", "89"): 0 natively, 0 with a warning through PTX, else 1.
archs_run_on() {
  local built=$1 card=${2%%[;,]*} entry num kind card_num
  card_num=${card//[^0-9]/}
  local -a list
  IFS=';' read -r -a list <<<"$built"
  for entry in "${list[@]}"; do
    kind=${entry#*-}; [[ $entry == *-* ]] || kind=both
    num=${entry%%-*}
    if [[ $kind != virtual ]] && [[ $num == "$card" || $num == "${card_num}a" || $num == "$card_num" ]]; then
      return 0
    fi
  done
  for entry in "${list[@]}"; do
    kind=${entry#*-}; [[ $entry == *-* ]] || kind=both
    num=${entry%%-*}
    if [[ $kind != real && ${num//a/} -le $card_num && $num != *a ]]; then
      warn "no machine code for $card in '$built': the driver compiles compute_${num} PTX at start"
      return 0
    fi
  done
  return 1
}

# Adds CUDA's library folders, and those of any library the binaries $@ still miss, to
# LD_LIBRARY_PATH; prints the libraries still missing after that.
resolve_libs() {
  local d lib found missing
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d && :${LD_LIBRARY_PATH:-}: != *":$d:"* ]] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
  done
  export LD_LIBRARY_PATH
  missing=$(ldd "$@" 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
  for lib in $missing; do
    found=$(find /usr/local /opt /usr/lib -maxdepth 8 -name "$lib" 2>/dev/null | head -n1 || true)
    if [[ -n $found ]]; then
      LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$found")"
      echo "libraries: $lib from $(dirname "$found")" >&2
    fi
  done
  export LD_LIBRARY_PATH
  ldd "$@" 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' '
}

# Sets BIN_SOURCE, HLLM_BIN, TEST_DIR, BENCH_DIR, CTEST_DIR from the prebuilt binaries; returns 1
# (with the reason on stderr) when they are absent, stale or do not run here.
# shellcheck disable=SC2034,SC2154  # root, arch: the entry point's; it reads what this sets
use_prebuilt() {
  local stamp="$PREBUILT_DIR/STAMP" want have bin="$root/$PREBUILT_DIR/bin" missing name
  [[ -f $stamp && -f $PREBUILT_DIR/$PREBUILT_TAR ]] || { warn "no prebuilt binaries ($stamp)"; return 1; }
  echo "prebuilt: $(tr '\n' ' ' <"$stamp")"
  want=$(stamp_get fingerprint "$stamp")
  have=$(source_hashes | sha256sum | cut -d' ' -f1)
  if [[ $want != "$have" ]]; then
    warn "prebuilt binaries are stale: the sources differ from those they were built from:"
    diff <(source_hashes) "$PREBUILT_DIR/SOURCES.sha256" | sed -n 's/^[<>] [0-9a-f]*  //p' |
      sort -u | head -n 20 >&2 || true
    return 1
  fi
  if ! archs_run_on "$(stamp_get archs "$stamp")" "$arch"; then
    warn "prebuilt binaries are for $(stamp_get archs "$stamp"), not for this card ($arch)"
    return 1
  fi
  rm -rf "$bin"
  if command -v xz >/dev/null; then
    tar -C "$PREBUILT_DIR" -xJf "$PREBUILT_DIR/$PREBUILT_TAR" || { warn "cannot unpack"; return 1; }
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$PREBUILT_DIR/$PREBUILT_TAR" "$PREBUILT_DIR" || { warn "cannot unpack"; return 1; }
  fi
  export LD_LIBRARY_PATH="$bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing=$(resolve_libs "$bin/hllm" "$bin"/tests/* "$bin"/bench/*)
  if [[ -n ${missing// /} ]]; then
    warn "prebuilt binaries miss libraries here: $missing"
    return 1
  fi
  if ! "$bin/hllm" --version; then
    warn "the prebuilt hllm does not run here"
    return 1
  fi
  # The fixture tests read $HLLM_TEST_DATA when set (tests/gpu_test_util.cuh): this checkout's.
  export HLLM_TEST_DATA="$root/tests/data"
  # ctest over the unpacked tests: a test file of our own, with this machine's paths.
  {
    echo "# written by tools/device_check.sh for the prebuilt GPU tests"
    for name in $(stamp_get tests "$stamp"); do
      echo "add_test([=[$name]=] \"$bin/tests/$name\")"
      echo "set_tests_properties([=[$name]=] PROPERTIES LABELS \"gpu\" TIMEOUT \"120\")"
    done
  } >"$bin/CTestTestfile.cmake"
  BIN_SOURCE="prebuilt $(stamp_get commit "$stamp") for $(stamp_get archs "$stamp")"
  HLLM_BIN="$bin/hllm" TEST_DIR="$bin/tests" BENCH_DIR="$bin/bench" CTEST_DIR="$bin"
}
