# SPDX-License-Identifier: Apache-2.0
# Runs PROGRAM with ARGS (comma-separated: ctest would split a ;-list) and passes only if it
# exits with status 1 and prints exactly one line on stderr matching STDERR_REGEX: the
# contract of qlr's command-line programs on bad input.
# Usage: cmake -DPROGRAM=prog -DARGS=--flag,value -DSTDERR_REGEX=... -P qlrExpectFailure.cmake
string(REPLACE "," ";" args "${ARGS}")
execute_process(COMMAND ${PROGRAM} ${args} RESULT_VARIABLE status OUTPUT_QUIET ERROR_VARIABLE err)
string(STRIP "${err}" err)
if(NOT status EQUAL 1)
  message(FATAL_ERROR "expected exit status 1, got '${status}' (stderr: ${err})")
endif()
if(err MATCHES "\n")
  message(FATAL_ERROR "expected a one-line error, got:\n${err}")
endif()
if(NOT err MATCHES "${STDERR_REGEX}")
  message(FATAL_ERROR "stderr '${err}' does not match '${STDERR_REGEX}'")
endif()
message(STATUS "exit 1 with: ${err}")
