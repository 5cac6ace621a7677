# ctest `json_free_headers`: the headers a program needs for inference (the model, the backends, the
# engine, the tokenizer's encode/decode) do not pull in nlohmann/json, which costs every translation
# unit that includes it seconds of compile time. JSON is parsed only by the headers that load files:
# io/, model/load.hpp, the *_json.hpp and *_load.hpp headers, engine/open_model.hpp, serve/.
# Run: cmake -DCXX_COMPILER=g++ -DSOURCE_DIR=. -DWORK_DIR=/tmp/x -P tests/json_free_check.cmake
set(headers
  model/config.hpp model/weights.hpp model/kv_cache.hpp model/llama.hpp
  quant/gptq_config.hpp
  cpu/backend.hpp
  engine/sampler.hpp engine/generate.hpp engine/engine.hpp engine/perplexity.hpp
  tokenizer/tokenizer.hpp tokenizer/chat.hpp tokenizer/stream.hpp)

file(MAKE_DIRECTORY ${WORK_DIR})
set(failed)
foreach(header IN LISTS headers)
  string(MAKE_C_IDENTIFIER ${header} stem)
  set(tu ${WORK_DIR}/${stem}.cpp)
  file(WRITE ${tu} "#include \"hllm/${header}\"\n")
  execute_process(
    COMMAND ${CXX_COMPILER} -std=c++20 -E -I${SOURCE_DIR}/include -I${SOURCE_DIR}/kernels ${tu}
    OUTPUT_VARIABLE text ERROR_VARIABLE errors RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(SEND_ERROR "json_free_headers: hllm/${header} does not preprocess:\n${errors}")
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
  list(APPEND failed "hllm/${header} (nlohmann included from ${via})")
endforeach()

if(failed)
  list(JOIN failed "\n  " lines)
  message(FATAL_ERROR "json_free_headers: these inference headers pull in nlohmann/json:\n  ${lines}\n"
          "Move the JSON reading into a loader header (see model/config_json.hpp).")
endif()
list(LENGTH headers n)
message(STATUS "json_free_headers: ${n} inference headers are free of nlohmann/json")
