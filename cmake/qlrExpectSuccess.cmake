# SPDX-License-Identifier: Apache-2.0
# Runs PROGRAM with ARGS (separated by ASCII unit separators: ctest would split a ;-list, and
# arguments may hold commas) and passes only if it exits with status 0 and its standard output
# matches STDOUT_REGEX: a test of a program checks both (PASS_REGULAR_EXPRESSION alone ignores
# the exit status). qlr_add_program_test in the top-level CMakeLists.txt writes the call.
string(ASCII 31 separator)
string(REPLACE "${separator}" ";" args "${ARGS}")
execute_process(COMMAND ${PROGRAM} ${args} RESULT_VARIABLE status OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
message("${out}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "expected exit status 0, got '${status}'; stderr:\n${err}")
endif()
if(NOT out MATCHES "${STDOUT_REGEX}")
  message(FATAL_ERROR "the output does not match '${STDOUT_REGEX}'; stderr:\n${err}")
endif()
