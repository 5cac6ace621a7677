# ctest `format_check`: every C++/CUDA source of the project is formatted as .clang-format says.
# Run: cmake -DCLANG_FORMAT=clang-format -DSOURCE_DIR=. -P tests/format_check.cmake
file(GLOB_RECURSE sources
  ${SOURCE_DIR}/include/*.hpp ${SOURCE_DIR}/kernels/*.cuh ${SOURCE_DIR}/kernels/*.hpp ${SOURCE_DIR}/tools/*.hpp ${SOURCE_DIR}/tools/*.cpp
  ${SOURCE_DIR}/tests/*.cpp ${SOURCE_DIR}/tests/*.cu ${SOURCE_DIR}/bench/*.cpp ${SOURCE_DIR}/bench/*.cu
  ${SOURCE_DIR}/examples/*.cpp)
list(FILTER sources EXCLUDE REGEX "/unicode_tables\\.hpp$")  # generated
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${sources} RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "format_check: run `clang-format -i` on the files above")
endif()
