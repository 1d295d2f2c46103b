// SPDX-License-Identifier: Apache-2.0
// Quantize and dequantize throughput on a 7B-class weight (4096×4096, g = 128), in GB/s of
// FP32 weight read (quantize) or written (dequantize), beside a plain FP32 copy of the same
// bytes as the machine's baseline. Per-token activation quantization (W8A8/W4A8's input
// side), in GB/s of FP32 activations read, on each kernel path and as quant's scalar loop:
//   quantize_token/qlr-<isa>/M:<m>/K:<k>/threads:1      the row kernel over M rows
//   quantize_per_token/qlr[-<isa>]/M:<m>/K:<k>/threads:<t>  layers::quantize_activations
//   quantize_per_token/naive/…                             quant::quantize_per_token
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <random>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "qlr/core/cpu.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/kernels/activation.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/layers/rotated_activations.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr/version.hpp"

namespace {

/// A Gaussian weight (σ = 0.02, typical of LLM projections), made once per shape.
const qlr::Matrix& weight(qlr::index_t n, qlr::index_t k) {
  static std::map<std::pair<qlr::index_t, qlr::index_t>, qlr::Matrix> cache;
  auto [it, inserted] = cache.try_emplace({n, k});
  if (inserted) {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    it->second.resize(n, k);
    for (qlr::index_t i = 0; i < it->second.size(); ++i) it->second.data()[i] = normal(rng);
  }
  return it->second;
}

/// An output buffer with every page already touched, so no timed iteration pays the first
/// page faults (Google Benchmark 1.7 has no warm-up phase). Not zeros: the compiler turns a
/// malloc + zero-fill into calloc, which leaves fresh pages untouched.
qlr::Matrix touched_output(qlr::index_t n, qlr::index_t k) {
  return qlr::Matrix::Constant(n, k, 1.0f);
}

void set_rate(benchmark::State& state, qlr::index_t n, qlr::index_t k) {
  state.counters["bytes"] = benchmark::Counter(static_cast<double>(sizeof(float) * n * k),
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weights"] = benchmark::Counter(static_cast<double>(n * k),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

/// Args: N, K, threads.
template <class Policy>
void BM_Qlr_Quantize(benchmark::State& state, Policy policy) {
  const auto n = state.range(0), k = state.range(1);
  qlr::set_num_threads(static_cast<int>(state.range(2)));
  const qlr::Matrix& w = weight(n, k);
  for (auto _ : state) benchmark::DoNotOptimize(policy.quantize(w));
  set_rate(state, n, k);
}

template <class Policy>
void BM_Qlr_Dequantize(benchmark::State& state, Policy policy) {
  const auto n = state.range(0), k = state.range(1);
  qlr::set_num_threads(static_cast<int>(state.range(2)));
  const auto q = policy.quantize(weight(n, k));
  qlr::Matrix out = touched_output(n, k);
  for (auto _ : state) {
    qlr::parallel_for(n, 8, [&](qlr::index_t begin, qlr::index_t end) {
      for (qlr::index_t o = begin; o < end; ++o) qlr::quant::dequantize_row(q, o, out.row(o).data());
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, n, k);
}

/// The baseline: one pass of memcpy over the same FP32 bytes (read + write), per thread count.
void BM_Memcpy_Copy_F32(benchmark::State& state) {
  const auto n = state.range(0), k = state.range(1);
  qlr::set_num_threads(static_cast<int>(state.range(2)));
  const qlr::Matrix& w = weight(n, k);
  qlr::Matrix out = touched_output(n, k);
  for (auto _ : state) {
    qlr::parallel_for(n, 8, [&](qlr::index_t begin, qlr::index_t end) {
      std::memcpy(out.row(begin).data(), w.row(begin).data(),
                  sizeof(float) * static_cast<std::size_t>((end - begin) * k));
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, n, k);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "K", "threads"});
  for (const int threads : {1, 2}) b->Args({4096, 4096, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void small_shapes(benchmark::internal::Benchmark* b) {  // clip search: 80 trials per group
  b->ArgNames({"N", "K", "threads"});
  for (const int threads : {1, 2}) b->Args({1024, 1024, threads});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

using qlr::quant::IntAsym;
using qlr::quant::IntSym;
const qlr::quant::IntOptions g128{.group_size = 128};
const qlr::quant::IntOptions g128_clip{.group_size = 128, .range = qlr::quant::Range::mse_clip};

BENCHMARK(BM_Memcpy_Copy_F32)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Quantize, Int4Asym_G128, IntAsym<4>(g128))->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Quantize, Int4Sym_G128, IntSym<4>(g128))->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Quantize, Int8Asym_G128, IntAsym<8>(g128))->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Quantize, Int3Asym_G128, IntAsym<3>(g128))->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Quantize, Nf4_B64, qlr::quant::Nf4())->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Quantize, Int4Asym_G128_Clip, IntAsym<4>(g128_clip))->Apply(small_shapes);
BENCHMARK_CAPTURE(BM_Qlr_Dequantize, Int4Asym_G128, IntAsym<4>(g128))->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Dequantize, Int8Asym_G128, IntAsym<8>(g128))->Apply(shapes);
BENCHMARK_CAPTURE(BM_Qlr_Dequantize, Nf4_B64, qlr::quant::Nf4())->Apply(shapes);

/// M×K activations: N(0, 1) with a ±40 outlier every 97 features, as LLM inputs have.
qlr::Matrix activations(qlr::index_t m, qlr::index_t k) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  qlr::Matrix x(m, k);
  for (qlr::index_t i = 0; i < x.size(); ++i) x.data()[i] = i % 97 == 0 ? 40.0f : normal(rng);
  return x;
}

void set_activation_rate(benchmark::State& state, const qlr::Matrix& x) {
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(sizeof(float) * x.size()),
                                              benchmark::Counter::kIsIterationInvariantRate);
}

/// The row kernel of path `isa` over every row of x, into buffers made once: what the
/// kernel costs, without the quantizer's allocation and threading.
void bench_quantize_token(benchmark::State& state, qlr::index_t m, qlr::index_t k,
                          qlr::kernels::Isa isa) {
  const qlr::Matrix x = activations(m, k);
  std::vector<std::int8_t> codes(static_cast<std::size_t>(m * k), 1);
  std::vector<float> scales(static_cast<std::size_t>(m));
  const qlr::kernels::QuantizeTokenFn quantize_token = qlr::kernels::quantize_token_for(isa);
  for (auto _ : state) {
    for (qlr::index_t t = 0; t < m; ++t)
      scales[static_cast<std::size_t>(t)] = quantize_token(x.row(t).data(), k, 8, 1.0f, codes.data() + t * k);
    benchmark::DoNotOptimize(codes.data());
    benchmark::DoNotOptimize(scales.data());
    benchmark::ClobberMemory();
  }
  set_activation_rate(state, x);
}

/// layers::quantize_activations on path `isa`, or quant::quantize_per_token (`naive`).
void bench_quantize_per_token(benchmark::State& state, qlr::index_t m, qlr::index_t k, int threads,
                              bool naive, qlr::kernels::Isa isa) {
  qlr::set_num_threads(threads);
  const qlr::Matrix x = activations(m, k);
  for (auto _ : state) {
    if (naive)
      benchmark::DoNotOptimize(qlr::quant::quantize_per_token(x));
    else
      benchmark::DoNotOptimize(qlr::layers::quantize_activations(x, {}, isa));
  }
  set_activation_rate(state, x);
}

std::string activation_name(const std::string& what, const std::string& impl, qlr::index_t m,
                            qlr::index_t k, int threads) {
  return what + "/" + impl + "/M:" + std::to_string(m) + "/K:" + std::to_string(k) +
         "/threads:" + std::to_string(threads);
}

void register_activation_benchmarks() {
  namespace kernels = qlr::kernels;
  const auto add = [](const std::string& label, auto function, auto... args) {
    benchmark::RegisterBenchmark(label.c_str(), function, args...)->UseRealTime()->Unit(benchmark::kMicrosecond);
  };
  // Rows of LLaMA-7B's hidden size and MLP width: decode (M = 1), a small batch, a prefill.
  for (const qlr::index_t k : {4096, 11008}) {
    for (const qlr::index_t m : {1, 16, 256}) {
      for (const kernels::Isa isa : {kernels::Isa::reference, kernels::Isa::portable})
        add(activation_name("quantize_token", std::string("qlr-") + kernels::to_string(isa), m, k, 1),
            bench_quantize_token, m, k, isa);
    }
  }
  for (const int threads : {1, 2}) {
    const qlr::index_t m = 256, k = 4096;
    add(activation_name("quantize_per_token", "qlr", m, k, threads), bench_quantize_per_token, m, k,
        threads, false, kernels::best_isa());
    for (const kernels::Isa isa : {kernels::Isa::reference, kernels::Isa::portable})
      add(activation_name("quantize_per_token", std::string("qlr-") + kernels::to_string(isa), m, k, threads),
          bench_quantize_per_token, m, k, threads, false, isa);
    add(activation_name("quantize_per_token", "naive", m, k, threads), bench_quantize_per_token, m, k,
        threads, true, kernels::best_isa());
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_activation_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("qlr_version", qlr::version_string);
  benchmark::AddCustomContext("qlr_cpu_features", qlr::to_string(qlr::cpu_features()));
  benchmark::AddCustomContext("compiler", __VERSION__);
  benchmark::AddCustomContext("qlr_isa", qlr::kernels::to_string(qlr::kernels::best_isa()));
  // The portable path's xsimd arch is the unit's own: sse2 unless built with -march flags.
  benchmark::AddCustomContext("qlr_portable_arch", xsimd::default_arch::name());
  (void)weight(4096, 4096);  // made before any timing starts
  (void)weight(1024, 1024);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
