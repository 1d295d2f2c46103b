// SPDX-License-Identifier: Apache-2.0
// Walsh–Hadamard transform throughput over a batch of rows, in GB/s of rows transformed
// (each read and written once), beside the machine's memory-read limit in the same binary:
//   fwht/qlr/N:<n>/rows:<r>/threads:<t>        HadamardTransform on the best path
//   fwht/qlr-<isa>/…                             each kernel path (reference: the scalar loop)
//   fwht/naive/…                                 the radix-2 scalar loop, a row at a time
//   fwht/eigen/…                                 the dense product X·Ĥᵀ (n ≤ 4096)
// A batch of 256 MB lives in DRAM (what the target is about); rows:16 stays in cache.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <string>

#include <xsimd/xsimd.hpp>

#include "bench_support.hpp"
#include "memread.hpp"
#include "qlr/core/aligned.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/reference/fwht.hpp"
#include "qlr/rotate/hadamard_transform.hpp"

namespace {

using qlr::index_t;
namespace kernels = qlr::kernels;

constexpr std::size_t dram_batch_bytes = std::size_t{256} << 20;

/// rows × n Gaussian floats in qlr's aligned (huge-page) memory, every page touched.
struct Batch {
  qlr::AlignedVector<float> data;
  index_t rows, n;
  Batch(index_t r, index_t cols) : data(static_cast<std::size_t>(r * cols)), rows(r), n(cols) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : data) v = normal(rng);
  }
  [[nodiscard]] qlr::MatrixMap map() {
    return {data.data(), rows, n, Eigen::OuterStride<>(n)};
  }
};

void set_rate(benchmark::State& state, const Batch& b) {
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(b.data.size() * sizeof(float)),
                                              benchmark::Counter::kIsIterationInvariantRate);
}

/// qlr's transform on path `isa`. Each iteration transforms the batch in place: the values
/// stay bounded (Ĥ is orthogonal), so repeated runs measure the same work.
void bench_qlr(benchmark::State& state, index_t n, index_t rows, int threads, kernels::Isa isa) {
  qlr::set_num_threads(threads);
  Batch batch(rows, n);
  const qlr::rotate::HadamardTransform transform(n, isa);
  for (auto _ : state) {
    transform.apply_rows(batch.map());
    benchmark::ClobberMemory();
  }
  set_rate(state, batch);
}

/// The radix-2 scalar transform, a row at a time, split over rows like qlr's.
void bench_naive(benchmark::State& state, index_t n, index_t rows, int threads) {
  qlr::set_num_threads(threads);
  Batch batch(rows, n);
  int log2n = 0;
  while ((index_t{1} << log2n) < n) ++log2n;
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (auto _ : state) {
    qlr::parallel_for(rows, 4, [&](index_t begin, index_t end) {
      for (index_t r = begin; r < end; ++r) kernels::reference::fwht(batch.data.data() + r * n, log2n, scale);
    });
    benchmark::ClobberMemory();
  }
  set_rate(state, batch);
}

/// The dense product with Ĥ, Eigen FP32 (what a rotation costs without a fast transform).
void bench_eigen(benchmark::State& state, index_t n, index_t rows, int threads) {
  qlr::set_num_threads(threads);
  Batch batch(rows, n);
  qlr::Matrix h(n, n);
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j)
      h(i, j) = ((__builtin_popcountll(static_cast<unsigned long long>(i & j)) & 1) != 0 ? -1.0f : 1.0f) /
                std::sqrt(static_cast<float>(n));
  qlr::Matrix out(rows, n);
  for (auto _ : state) {
    qlr::parallel_for(rows, 4, [&](index_t begin, index_t end) {
      out.middleRows(begin, end - begin).noalias() = batch.map().middleRows(begin, end - begin) * h.transpose();
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, batch);
}

std::string name(const std::string& impl, index_t n, index_t rows, int threads) {
  return "fwht/" + impl + "/N:" + std::to_string(n) + "/rows:" + std::to_string(rows) +
         "/threads:" + std::to_string(threads);
}

void register_all() {
  qlr_bench::register_memread();
  const auto add = [](const std::string& label, auto function, auto... args) {
    benchmark::RegisterBenchmark(label.c_str(), function, args...)->UseRealTime()->Unit(benchmark::kMicrosecond);
  };
  for (const int threads : {1, 2}) {
    // Powers of two from 64 to 16384, and LLaMA-7B's MLP width 11008 = 172·64.
    for (const index_t n : {64, 256, 1024, 4096, 11008, 16384}) {
      const bool pow2 = (n & (n - 1)) == 0;
      for (const index_t rows : {static_cast<index_t>(dram_batch_bytes / sizeof(float)) / n, index_t{16}}) {
        add(name("qlr", n, rows, threads), bench_qlr, n, rows, threads, kernels::best_isa());
        for (const kernels::Isa isa : kernels::available_isas())
          if (isa != kernels::Isa::avx_vnni)  // avx_vnni runs avx2's
            add(name(std::string("qlr-") + kernels::to_string(isa), n, rows, threads), bench_qlr, n, rows,
                threads, isa);
        if (pow2) add(name("naive", n, rows, threads), bench_naive, n, rows, threads);
      }
      if (pow2 && n <= 4096) add(name("eigen", n, 256, threads), bench_eigen, n, index_t{256}, threads);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  // The portable path's xsimd arch is the unit's own: sse2 unless built with -march flags.
  benchmark::AddCustomContext("qlr_portable_arch", xsimd::default_arch::name());
  return qlr_bench::run_benchmarks(argc, argv);
}
