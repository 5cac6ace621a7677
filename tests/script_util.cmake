# What the ctest scripts run with `cmake -P` share (consumer_test.cmake, fuzz_test.cmake). Set
# SCRIPT_TEST_NAME (the ctest name, used in messages) before including it.

# step(<what> <command...>): runs the command; on failure prints its output and stops the test,
# naming the step.
function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${SCRIPT_TEST_NAME}: ${what} failed (${rc}):\n${out}")
  endif()
  message(STATUS "${SCRIPT_TEST_NAME}: ${what}: ok")
endfunction()

# Appends the parent build's generator (-DGENERATOR) and make program (-DMAKE_PROGRAM), when
# given, to the configure arguments in list <var>.
macro(append_generator_args var)
  if(GENERATOR)
    list(APPEND ${var} -G ${GENERATOR})
  endif()
  if(MAKE_PROGRAM)
    list(APPEND ${var} -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
  endif()
endmacro()
