# SPDX-License-Identifier: Apache-2.0
# The README's install recipe on a clean copy of the tree, then a project the repository does
# not otherwise build against the installed package. Fails unless the recipe installs the
# headers, the compiled unit's sources and the CMake package without building anything (and
# without the qlr tool), and unless the consumer builds and its programs exit 0 and say "ok".
# Usage: cmake -DSOURCE_DIR=<qlr> -DWORK_DIR=<scratch> -DGENERATOR=<gen> -DCXX=<c++>
#              "-DCXX_FLAGS_RELEASE=<flags>" -P install_recipe.cmake
file(READ "${SOURCE_DIR}/README.md" readme)
string(REGEX MATCH "\n(cmake --preset [a-z]+ && cmake --install [^\n]*--prefix /opt/qlr)\n" found "${readme}")
if(NOT found)
  message(FATAL_ERROR "README.md shows no install recipe ending in '--prefix /opt/qlr'")
endif()
set(prefix "${WORK_DIR}/prefix")
string(REPLACE "/opt/qlr" "${prefix}" recipe "${CMAKE_MATCH_1}")

# A clean copy: the tracked sources only, no build trees.
file(REMOVE_RECURSE "${WORK_DIR}")
set(tree "${WORK_DIR}/qlr")
file(MAKE_DIRECTORY "${tree}")
foreach(entry IN ITEMS CMakeLists.txt CMakePresets.json LICENSE README.md cmake include tests
                       examples bench tools data docs)
  file(COPY "${SOURCE_DIR}/${entry}" DESTINATION "${tree}")
endforeach()

message(STATUS "recipe: ${recipe}")
execute_process(COMMAND sh -c "${recipe}" WORKING_DIRECTORY "${tree}" RESULT_VARIABLE status
                OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "the README's install recipe failed (${status}):\n${out}")
endif()
foreach(installed IN ITEMS include/qlr/qlr.hpp include/qlr/layers/any_linear.hpp
                           include/qlr/kernels/kernels.cpp include/qlr/layers/layers.cpp
                           include/qlr/compensate/compensate.cpp include/qlr/train/train.cpp
                           share/cmake/qlr/qlrConfig.cmake share/cmake/qlr/qlrCompiled.cmake)
  if(NOT EXISTS "${prefix}/${installed}")
    message(FATAL_ERROR "the recipe did not install ${installed}")
  endif()
endforeach()
if(EXISTS "${prefix}/bin/qlr")
  message(FATAL_ERROR "the recipe installed the qlr tool, which belongs to the 'tool' component")
endif()
file(GLOB_RECURSE objects "${tree}/build/*.o")
if(objects)
  message(FATAL_ERROR "the install recipe built objects: ${objects}")
endif()

set(consumer "${WORK_DIR}/consumer")
execute_process(
  COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${consumer}" -G "${GENERATOR}"
          "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release
          "-DCMAKE_CXX_FLAGS_RELEASE=${CXX_FLAGS_RELEASE}"
  RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "configuring the consumer against the installed package failed:\n${out}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${consumer}" RESULT_VARIABLE status
                OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "building the consumer failed:\n${out}")
endif()
foreach(program IN ITEMS qlr_consumer)
  execute_process(COMMAND "${consumer}/${program}" "${WORK_DIR}/scratch-${program}"
                  RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${program}:\n${out}${err}")
  if(NOT status EQUAL 0 OR NOT out MATCHES "qlr consumer: ok")
    message(FATAL_ERROR "${program} exited with ${status}")
  endif()
endforeach()
