// SPDX-License-Identifier: Apache-2.0
// The argument checks every token-major product shares: an input and an output matrix of
// the same M ≥ 1 tokens, each as wide as the weight says, with valid buffers and strides.
#pragma once

#include "qlr/core/error.hpp"
#include "qlr/core/view.hpp"

namespace qlr::kernels::detail {

/// One side of a product: its name in messages, its view, and the width the weight expects.
template <class View>
struct TokenSide {
  const char* name;   ///< "x", "y", "dy", "dx"
  View view;          ///< M × cols
  index_t cols;       ///< the width the weight expects
  const char* width;  ///< what that width is, e.g. "in_features K"
};

/// Throws unless both sides are non-null, have their expected widths, share M ≥ 1 rows and
/// have strides ≥ their row lengths.
inline void check_token_views(const char* entity, const TokenSide<ConstMatrixView>& in,
                              const TokenSide<MatrixView>& out) {
  QLR_CHECK(in.view.data != nullptr && out.view.data != nullptr, invalid_argument,
            "{}: {}.data = {}, {}.data = {}; expected non-null buffers", entity, in.name,
            static_cast<const void*>(in.view.data), out.name,
            static_cast<const void*>(out.view.data));
  QLR_CHECK(in.view.cols == in.cols, shape_mismatch, "{}: {}.cols = {}; expected {} = {}", entity,
            in.name, in.view.cols, in.width, in.cols);
  QLR_CHECK(out.view.cols == out.cols, shape_mismatch, "{}: {}.cols = {}; expected {} = {}",
            entity, out.name, out.view.cols, out.width, out.cols);
  QLR_CHECK(out.view.rows == in.view.rows && in.view.rows >= 1, shape_mismatch,
            "{}: {}.rows = {}, {}.rows = {}; expected the same number of tokens M >= 1", entity,
            out.name, out.view.rows, in.name, in.view.rows);
  QLR_CHECK(in.view.stride >= in.view.cols && out.view.stride >= out.view.cols, invalid_argument,
            "{}: {}.stride = {}, {}.stride = {}; expected strides >= the row lengths {} and {}",
            entity, in.name, in.view.stride, out.name, out.view.stride, in.view.cols,
            out.view.cols);
}

}  // namespace qlr::kernels::detail
