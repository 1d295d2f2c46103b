// SPDX-License-Identifier: Apache-2.0
// The weight-only GEMM entry point: Y = X·Ŵᵀ + epilogue for a PackedWeights, on the path
// `isa` (the best this CPU has by default), split over qlr's threads by output column.
#pragma once

#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/avx2/gemm_wq.hpp"
#include "qlr/kernels/avx512_vnni/gemm_wq.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/packed.hpp"
#include "qlr/kernels/portable/gemm_wq.hpp"
#include "qlr/kernels/reference/gemm_wq.hpp"

namespace qlr::kernels {

/// A weight-only GEMM path: y[m, n] for all m and n ∈ [n_begin, n_end). Never throws: its
/// arguments are checked once, by gemm().
using GemmWqFn = void (*)(const PackedView& w, ConstMatrixView x, MatrixView y,
                          const Epilogue& e, index_t n_begin, index_t n_end) noexcept;

/// The kernels of one ISA path, chosen once and called many times.
struct KernelTable {
  Isa isa;                 ///< the path these kernels belong to
  GemmWqFn gemm_wq_f32;    ///< W4/W8 weight-only × FP32 activations
};

/// The kernels of path `isa`. Throws Errc::unsupported when this CPU cannot run it.
inline KernelTable table_for(Isa isa) {
  QLR_CHECK(is_supported(isa), unsupported, "kernels::table_for: isa = {}; expected a path this CPU supports",
            to_string(isa));
  switch (isa) {
    case Isa::reference: return {isa, &reference::gemm_wq_f32};
    case Isa::portable: return {isa, &portable::gemm_wq_f32};
#if QLR_ARCH_X86
    case Isa::avx2:
    case Isa::avx_vnni: return {isa, &avx2::gemm_wq_f32};  // no dot products in FP32 paths
    case Isa::avx512_vnni: return {isa, &avx512_vnni::gemm_wq_f32};
#else
    default: break;
#endif
  }
  return {Isa::portable, &portable::gemm_wq_f32};
}

namespace detail {
/// Throws unless x (M×K) and y (M×N) fit `w` and the epilogue's operands fit both.
inline void check_gemm_args(const PackedView& w, ConstMatrixView x, MatrixView y,
                            const Epilogue& e) {
  constexpr const char* entity = "kernels::gemm";
  QLR_CHECK(x.data != nullptr && y.data != nullptr, invalid_argument,
            "{}: x.data = {}, y.data = {}; expected non-null buffers", entity,
            static_cast<const void*>(x.data), static_cast<const void*>(y.data));
  QLR_CHECK(x.cols == w.cols, shape_mismatch, "{}: x.cols = {}; expected in_features K = {}",
            entity, x.cols, w.cols);
  QLR_CHECK(y.cols == w.rows, shape_mismatch, "{}: y.cols = {}; expected out_features N = {}",
            entity, y.cols, w.rows);
  QLR_CHECK(y.rows == x.rows && x.rows >= 1, shape_mismatch,
            "{}: y.rows = {}, x.rows = {}; expected the same number of tokens M >= 1", entity,
            y.rows, x.rows);
  QLR_CHECK(x.stride >= x.cols && y.stride >= y.cols, invalid_argument,
            "{}: x.stride = {}, y.stride = {}; expected strides >= the row lengths {} and {}",
            entity, x.stride, y.stride, x.cols, y.cols);
  if (e.low_rank != nullptr) {
    const LowRankTerm& lr = *e.low_rank;
    QLR_CHECK(lr.b.data != nullptr && lr.t.data != nullptr && lr.b.rows == w.rows &&
                  lr.t.rows == x.rows && lr.b.cols == lr.t.cols && lr.b.stride >= lr.b.cols &&
                  lr.t.stride >= lr.t.cols,
              shape_mismatch,
              "{}: low-rank B is {}x{}, t is {}x{}; expected B (N = {})x r and t (M = {})x r",
              entity, lr.b.rows, lr.b.cols, lr.t.rows, lr.t.cols, w.rows, x.rows);
  }
}
}  // namespace detail

/// Y (M×N) = X (M×K)·Ŵᵀ, then the epilogue, on path `isa`. Output columns are split over
/// qlr's threads; every output is computed the same way whatever the split, so the result
/// is bitwise identical for any thread count. Throws for mismatched shapes.
template <QuantFormatType Format>
void gemm(const PackedWeights<Format>& w, ConstMatrixView x, MatrixView y, const Epilogue& e = {},
          Isa isa = best_isa()) {
  const PackedView v = w.view();
  detail::check_gemm_args(v, x, y, e);
  const GemmWqFn kernel = table_for(isa).gemm_wq_f32;
  // Enough columns per task to amortize the hand-off; any split gives the same bytes.
  parallel_for(v.rows, 64, [&](index_t begin, index_t end) { kernel(v, x, y, e, begin, end); });
}

}  // namespace qlr::kernels
