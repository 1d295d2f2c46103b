// SPDX-License-Identifier: Apache-2.0
// The engine's element-wise and attention operations, written once for any scalar: the
// inference forward (llama.cpp) runs them in float, the trainable model (train.hpp) runs the
// same code in float for training, so that an adapter with B = 0 gives the engine's logits bit
// for bit, and in double for the gradient checks. Each has its backward beside it.
#pragma once

#include <cmath>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/types.hpp"

namespace llama::ops {

using qlr::index_t;
/// A row-major matrix of T (qlr::train::MatrixT).
template <class T>
using MatrixT = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// A column vector of T (qlr::train::VectorT).
template <class T>
using VectorT = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Calls body(begin, end) on ranges of rows, in parallel when there is enough work. Every
/// range but the last starts and ends at a multiple of 16 elements, so Eigen's vectorized loops
/// give each element the bits a loop over the whole matrix gives it, whatever the split.
template <class Body>
void for_rows(index_t rows, index_t cols, Body&& body) {
  index_t unit = 16;  // rows per range boundary: unit·cols is a multiple of 16
  for (index_t c = cols; unit > 1 && c % 2 == 0; c /= 2) unit /= 2;
  constexpr index_t min_elements = 16384;  // below this a job costs more than it saves
  const index_t units = (rows + unit - 1) / unit;
  const index_t grain = std::max<index_t>(1, min_elements / std::max<index_t>(1, unit * cols));
  qlr::parallel_for(units, grain, [&](index_t begin, index_t end) {
    body(begin * unit, std::min(end * unit, rows));
  });
}

/// llama2.c's RMSNorm ε.
inline constexpr double rms_eps = 1e-5;

/// out = γ ⊙ x / sqrt(mean(x²) + ε), per row.
template <class T>
void rms_norm(const MatrixT<T>& x, const VectorT<T>& gamma, MatrixT<T>& out) {
  out.resize(x.rows(), x.cols());
  for_rows(x.rows(), x.cols(), [&](index_t begin, index_t end) {
    for (index_t t = begin; t < end; ++t) {
      const T mean_square = x.row(t).squaredNorm() / static_cast<T>(x.cols());
      const T inv = T(1) / std::sqrt(mean_square + static_cast<T>(rms_eps));
      out.row(t) = (x.row(t).array() * inv) * gamma.transpose().array();
    }
  });
}

/// dx += ∂/∂x of rms_norm for dy = ∂L/∂out: with r = 1/sqrt(mean(x²) + ε) and g = γ ⊙ dy,
/// dx = r·g − r³·x·(g·x)/K per row.
template <class T>
void rms_norm_backward(const MatrixT<T>& x, const VectorT<T>& gamma, const MatrixT<T>& dy,
                       MatrixT<T>& dx) {
  const auto k = static_cast<T>(x.cols());
  for_rows(x.rows(), x.cols(), [&](index_t begin, index_t end) {
    for (index_t t = begin; t < end; ++t) {
      const T mean_square = x.row(t).squaredNorm() / k;
      const T r = T(1) / std::sqrt(mean_square + static_cast<T>(rms_eps));
      const auto g = (dy.row(t).array() * gamma.transpose().array()).matrix();
      const T gx = g.dot(x.row(t));
      dx.row(t) += r * g - (r * r * r * gx / k) * x.row(t);
    }
  });
}

/// cos and sin of RoPE's angles, position p × pair i/2 of a head: p·10000^(−i/head).
template <class T>
struct RopeTable {
  int head = 0;         ///< head width
  MatrixT<T> cos, sin;  ///< positions × head/2

  RopeTable() = default;
  /// The angles of positions [0, positions) for heads of width `head`.
  RopeTable(index_t positions, int head_width)
      : head(head_width), cos(positions, head_width / 2), sin(positions, head_width / 2) {
    for (index_t p = 0; p < positions; ++p) {
      for (index_t i = 0; i < head; i += 2) {
        const T angle =
            static_cast<T>(p) / std::pow(T(10000), static_cast<T>(i) / static_cast<T>(head));
        cos(p, i / 2) = std::cos(angle);
        sin(p, i / 2) = std::sin(angle);
      }
    }
  }
};

/// Rotates each pair (2i, 2i + 1) of every head of row t by position(t)·10000^(−2i/head);
/// `inverse` rotates by the opposite angle, which is RoPE's backward (a rotation's
/// transpose). Throws past the table's positions.
template <class T, class Position>
void rope(MatrixT<T>& m, const RopeTable<T>& table, Position position, bool inverse = false) {
  const int head = table.head;
  for (index_t t = 0; t < m.rows(); ++t) {
    const index_t p = position(t);
    QLR_CHECK(p >= 0 && p < table.cos.rows(), invalid_argument,
              "llama::ops::rope: position {}; expected 0 <= p < {}", p, table.cos.rows());
  }
  for_rows(m.rows(), m.cols(), [&](index_t begin, index_t end) {
    for (index_t t = begin; t < end; ++t) {
      const index_t p = position(t);
      for (index_t i = 0; i < m.cols(); i += 2) {
        const index_t j = (i % head) / 2;
        const T c = table.cos(p, j), s = inverse ? -table.sin(p, j) : table.sin(p, j);
        const T a = m(t, i), b = m(t, i + 1);
        m(t, i) = a * c - b * s;
        m(t, i + 1) = a * s + b * c;
      }
    }
  });
}

/// One query row of one head: scores = keys·q / √head over the (rows of) keys it may see,
/// p = softmax(scores) left in `scores` unnormalized (exp(s − max)), out = pᵀ·values / Σp.
/// Returns Σp.
template <class T, class Keys, class Values, class Query, class Scores, class Out>
T attend(const Keys& keys, const Values& values, const Query& q, T inv_sqrt_head,
         Scores&& scores, Out&& out) {
  scores.noalias() = keys * q.transpose();
  scores *= inv_sqrt_head;
  scores = (scores.array() - scores.maxCoeff()).exp();
  const T total = scores.sum();
  out.noalias() = (scores.transpose() * values) / total;
  return total;
}

/// SwiGLU's product silu(gate) ⊙ up, silu(g) = g / (1 + e^(−g)).
template <class T>
MatrixT<T> swiglu(const MatrixT<T>& gate, const MatrixT<T>& up) {
  MatrixT<T> out(gate.rows(), gate.cols());
  for_rows(gate.rows(), gate.cols(), [&](index_t begin, index_t end) {
    const auto g = gate.middleRows(begin, end - begin).array();
    out.middleRows(begin, end - begin) =
        (g / (T(1) + (-g).exp())) * up.middleRows(begin, end - begin).array();
  });
  return out;
}

/// silu′(g) = σ(g)·(1 + g·(1 − σ(g))).
template <class T>
T silu_grad(T g) {
  const T sigma = T(1) / (T(1) + std::exp(-g));
  return sigma * (T(1) + g * (T(1) - sigma));
}

}  // namespace llama::ops
