# SPDX-License-Identifier: Apache-2.0
# Checks every #include in include/qlr against the module layering of STYLE.md §2:
# run as `cmake -DQLR_INCLUDE_DIR=<repo>/include -P layering.cmake`; fails listing each breach.
cmake_minimum_required(VERSION 3.25)  # policies for if(IN_LIST) in script mode
set(allowed_core "core")
set(allowed_kernels "core;kernels")
set(allowed_quant "core;quant")
set(allowed_rotate "core;kernels;rotate")
set(allowed_adapter "core;quant;adapter")
set(allowed_compensate "core;quant;adapter;compensate")
set(allowed_io "core;io")
set(allowed_model "core;model")
set(allowed_layers "core;kernels;quant;rotate;adapter;compensate;io;layers")
set(allowed_train "core;quant;rotate;kernels;adapter;compensate;io;layers;train")

file(GLOB_RECURSE headers RELATIVE ${QLR_INCLUDE_DIR}/qlr ${QLR_INCLUDE_DIR}/qlr/*.hpp)
set(breaches "")
foreach(header IN LISTS headers)
  if(NOT header MATCHES "/")
    # Module and umbrella headers (qlr.hpp, quant.hpp, …) may include anything, but hold
    # nothing else: the header check skips them because their parts are checked.
    file(STRINGS ${QLR_INCLUDE_DIR}/qlr/${header} code ENCODING UTF-8 REGEX "^[ \t]*[^ \t/#]")
    if(code AND NOT header STREQUAL "version.hpp")
      list(APPEND breaches "${header}: a module header holds only #includes, found: ${code}")
    endif()
    continue()
  endif()
  string(REGEX MATCH "^[a-z_0-9]+" module ${header})
  if(NOT DEFINED allowed_${module})
    list(APPEND breaches "${header}: module '${module}' is not in the layering table")
    continue()
  endif()
  file(STRINGS ${QLR_INCLUDE_DIR}/qlr/${header} includes REGEX "^[ \t]*#[ \t]*include")
  foreach(line IN LISTS includes)
    if(line MATCHES "\"qlr/([a-z_0-9]+)/")
      if(NOT CMAKE_MATCH_1 IN_LIST allowed_${module})
        list(APPEND breaches "${header}: includes module '${CMAKE_MATCH_1}' (${module} may use ${allowed_${module}})")
      endif()
      if(module STREQUAL "kernels" AND line MATCHES "qlr/core/matrix.hpp")
        list(APPEND breaches "${header}: kernels see raw views, never Eigen (core/matrix.hpp)")
      endif()
    elseif(line MATCHES "\"qlr/[a-z_0-9]+\\.hpp\"")
      list(APPEND breaches "${header}: includes a module header; include the specific header")
    endif()
    # Third-party headers: "include pattern@headers allowed to use it@why".
    foreach(rule IN ITEMS
        "<Eigen/@^(core/matrix|quant/|rotate/|adapter/|compensate/|layers/|train/)@Eigen outside core/matrix.hpp and the modules that may use it"
        "<fmt/@^(core/error|io/)@fmt outside core/error.hpp and io"
        "<nlohmann/@^io/@nlohmann-json outside io"
        "<immintrin.h>@^kernels/(avx2|avx_vnni|avx512_vnni)/@intrinsics outside kernels/avx2, kernels/avx_vnni and kernels/avx512_vnni"
        "<xsimd/@^kernels/portable/@xsimd outside kernels/portable")
      string(REPLACE "@" ";" rule "${rule}")
      list(GET rule 0 pattern)
      list(GET rule 1 allowed)
      list(GET rule 2 why)
      if(line MATCHES "${pattern}" AND NOT header MATCHES "${allowed}")
        list(APPEND breaches "${header}: ${why}")
      endif()
    endforeach()
  endforeach()
endforeach()

list(LENGTH headers count)
if(breaches)
  list(JOIN breaches "\n  " text)
  message(FATAL_ERROR "layering: breaches of STYLE.md §2:\n  ${text}")
endif()
message(STATUS "layering: ${count} headers follow STYLE.md §2")
