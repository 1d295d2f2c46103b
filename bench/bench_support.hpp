// SPDX-License-Identifier: Apache-2.0
// What the benchmark programs share: seeded data, views of Eigen matrices, the GB/s and
// GOP/s counters, and the setup cache that builds a footprint of weight copies once.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "qlr/core/matrix.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/version.hpp"
#include "memread.hpp"

namespace qlr_bench {

using qlr::index_t;
using qlr::Matrix;

/// Copies of a `bytes`-sized weight that together exceed footprint_bytes (at least 2).
inline std::size_t copies_for(std::size_t bytes) {
  return std::max<std::size_t>(2, (footprint_bytes + bytes - 1) / bytes);
}

/// A rows × cols matrix of N(0, sigma²) entries from `seed`.
inline Matrix random_matrix(index_t rows, index_t cols, float sigma, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  Matrix m(rows, cols);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

/// A read-only view of `m`.
inline qlr::ConstMatrixView input(const Matrix& m) { return {m.data(), m.rows(), m.cols(), m.cols()}; }
/// A writable view of `m`.
inline qlr::MatrixView output(Matrix& m) { return {m.data(), m.rows(), m.cols(), m.cols()}; }

/// GBps (weight bytes read per second) and GOPs (2·M·N·K per second).
inline void set_counters(benchmark::State& state, double weight_bytes, index_t m, index_t n, index_t k) {
  state.counters["GBps"] = benchmark::Counter(weight_bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GOPs"] = benchmark::Counter(2.0 * static_cast<double>(m) * static_cast<double>(n) *
                                                  static_cast<double>(k),
                                              benchmark::Counter::kIsIterationInvariantRate);
}

/// The weight copies of the benchmark now running, kept for the next one with the same key:
/// Google Benchmark calls a benchmark once per repetition, and the thread counts and ISA
/// paths of one shape share their weights, so building hundreds of MB of copies and reading
/// each once (see footprint_bytes) happens once per shape instead of once per run. Only the
/// last setup is kept, so memory stays at one footprint.
template <class Setup, class Make>
const Setup& kept_setup(const std::string& key, const Make& make) {
  static std::string kept_key;
  static std::shared_ptr<const void> kept;
  if (kept == nullptr || kept_key != key) {
    kept.reset();  // free the old copies before building the new ones
    kept = std::make_shared<const Setup>(make());
    kept_key = key;
  }
  return *static_cast<const Setup*>(kept.get());
}

/// A shape's key for kept_setup().
inline std::string setup_key(const char* what, index_t n, index_t k, index_t extra = 0) {
  return std::string(what) + "/" + std::to_string(n) + "x" + std::to_string(k) + "/" + std::to_string(extra);
}

/// A benchmark program's main after its benchmarks are registered: parses the flags (an
/// unknown one is an error), records qlr's version and ISA path in the context, runs.
inline int run_benchmarks(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("qlr_version", qlr::version_string);
  benchmark::AddCustomContext("qlr_isa", qlr::kernels::to_string(qlr::kernels::best_isa()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace qlr_bench
