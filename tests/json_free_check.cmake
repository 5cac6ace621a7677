# ctest `json_free_headers`: the headers a program needs for inference (the model, the backends, the
# engine, the tokenizer's encode/decode, the layout contracts) do not pull in nlohmann/json, which
# costs every translation unit that includes it seconds of compile time. JSON is parsed only by the
# headers that load files or speak HTTP, listed below; every other header under include/hllm/ is
# checked, so a new header is covered without being listed.
# Run: cmake -DCXX_COMPILER=g++ -DSOURCE_DIR=. -DWORK_DIR=build/json_free -P tests/json_free_check.cmake
get_filename_component(SOURCE_DIR ${SOURCE_DIR} ABSOLUTE)
set(loaders
  hllm/hllm.hpp hllm/io/json.hpp hllm/io/safetensors.hpp
  hllm/model/config_json.hpp hllm/model/weights_load.hpp hllm/model/load.hpp
  hllm/quant/gptq_config_json.hpp hllm/quant/gptq.hpp hllm/quant/quantize.hpp
  hllm/tokenizer/bpe_load.hpp hllm/tokenizer/tokenizer_load.hpp hllm/tokenizer/gguf_tokenizer.hpp
  hllm/engine/open_model.hpp hllm/engine/quantize_model.hpp
  hllm/grammar/json_schema.hpp)
file(GLOB_RECURSE headers RELATIVE ${SOURCE_DIR}/include ${SOURCE_DIR}/include/hllm/*.hpp)
list(FILTER headers EXCLUDE REGEX "^hllm/serve/")  # the HTTP API speaks JSON
list(REMOVE_ITEM headers ${loaders})
if(NOT headers)
  message(FATAL_ERROR "json_free_headers: no headers found under ${SOURCE_DIR}/include/hllm")
endif()

file(MAKE_DIRECTORY ${WORK_DIR})
set(failed)
foreach(header IN LISTS headers)
  string(MAKE_C_IDENTIFIER ${header} stem)
  set(tu ${WORK_DIR}/${stem}.cpp)
  file(WRITE ${tu} "#include \"${header}\"\n")
  execute_process(
    COMMAND ${CXX_COMPILER} -std=c++20 -E -I${SOURCE_DIR}/include -I${SOURCE_DIR}/kernels ${tu}
    OUTPUT_VARIABLE text ERROR_VARIABLE errors RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(SEND_ERROR "json_free_headers: ${header} does not preprocess:\n${errors}")
    continue()
  endif()
  string(FIND "${text}" "nlohmann" at)
  if(at EQUAL -1)
    continue()
  endif()
  # Name the hllm header that includes it: the last line marker of an hllm/ file before it.
  string(SUBSTRING "${text}" 0 ${at} before)
  string(REGEX MATCHALL "# [0-9]+ \"[^\"]*/hllm/[^\"]*\"" markers "${before}")
  list(POP_BACK markers via)
  string(REGEX REPLACE ".*/(hllm/[^\"]*)\"$" "\\1" via "${via}")
  list(APPEND failed "${header} (nlohmann included from ${via})")
endforeach()

if(failed)
  list(JOIN failed "\n  " lines)
  message(FATAL_ERROR "json_free_headers: these inference headers pull in nlohmann/json:\n  ${lines}\n"
          "Move the JSON reading into a loader header (see model/config_json.hpp).")
endif()
list(LENGTH headers n)
message(STATUS "json_free_headers: ${n} inference headers are free of nlohmann/json")
