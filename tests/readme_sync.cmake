# SPDX-License-Identifier: Apache-2.0
# Fails unless the ```cpp block under README.md's "## Example" equals examples/readme_example.cpp
# (minus that file's 4-line header), so the README's code is the code CI compiles and runs.
# Usage: cmake -DREADME=<path> -DEXAMPLE=<path> -P readme_sync.cmake
file(READ ${README} readme)
string(REGEX MATCH "## Example\n\n```cpp\n([^`]*)```" block "${readme}")
if(NOT block)
  message(FATAL_ERROR "README.md has no ```cpp block under '## Example'")
endif()
set(shown "${CMAKE_MATCH_1}")
file(READ ${EXAMPLE} example)
# MATCH, not REPLACE: REPLACE re-anchors ^ after every match and would strip every line.
string(REGEX MATCH "^[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n(.*)$" header "${example}")
set(compiled "${CMAKE_MATCH_1}")
if(NOT shown STREQUAL compiled)
  message(FATAL_ERROR "README.md's example differs from ${EXAMPLE}: update one to match the other")
endif()
message(STATUS "README example matches ${EXAMPLE}")
