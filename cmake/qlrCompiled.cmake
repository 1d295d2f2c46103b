# SPDX-License-Identifier: Apache-2.0
# qlr_add_compiled_library(name include_dir): qlr's opt-in compiled unit, a static library
# built by the including project, with its own flags, from the sources that sit beside the
# headers in `include_dir` (kernel bodies, make_linear's compositions, the run-time quantizer,
# the file readers and writers, the solvers, the FP32 trainable layer). It defines
# QLR_COMPILED for the units that link it, which then declare those templates instead of
# compiling them. Excluded from `all`: it builds only when something links it.
function(qlr_add_compiled_library name include_dir)
  add_library(${name} STATIC EXCLUDE_FROM_ALL
              ${include_dir}/qlr/kernels/kernels.cpp ${include_dir}/qlr/quant/quant.cpp
              ${include_dir}/qlr/io/io.cpp ${include_dir}/qlr/layers/layers.cpp
              ${include_dir}/qlr/compensate/compensate.cpp
              ${include_dir}/qlr/train/train.cpp)
  target_link_libraries(${name} PUBLIC qlr::qlr)
  target_compile_definitions(${name} PUBLIC QLR_COMPILED)
endfunction()
