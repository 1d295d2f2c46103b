// SPDX-License-Identifier: Apache-2.0
// qlr's GEMV and GEMM — weight-only INT4/INT8 and integer W8A8/W4A8/W4A4 — on the shapes of
// a 7B-class block, in the same binary as their peers: the machine's memory-read limit,
// Eigen FP32, the naive path (dequantize, then Eigen) and oneDNN's u8×s8 matmul. Names: <kernel>/<impl>/M:<m>/N:<n>/K:<k>/threads:<t>, counters
// GBps (weight bytes read per second) and GOPs (2·M·N·K per second).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include "bench_support.hpp"
#include "memread.hpp"
#include "qlr/core/aligned.hpp"
#include "qlr/core/cpu.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/kernels/input_grad.hpp"
#include "qlr/layers/rotated_activations.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr/rotate/rotation.hpp"
#include "qlr/version.hpp"

#if QLR_BENCH_HAVE_ONEDNN
#  include "onednn_peer.hpp"
#endif

namespace {

using qlr::index_t;
using qlr::Matrix;
namespace kernels = qlr::kernels;

using qlr_bench::copies_for;
using qlr_bench::footprint_bytes;
using qlr_bench::input;
using qlr_bench::kept_setup;
using qlr_bench::output;
using qlr_bench::random_matrix;
using qlr_bench::set_counters;
using qlr_bench::setup_key;

constexpr std::array<std::array<index_t, 2>, 3> llm_nk{{{4096, 4096}, {11008, 4096}, {4096, 11008}}};

/// The quantizer of a benchmark: groups (NF4's blocks) of `group_size`, f16 scales.
template <class Policy>
Policy make_policy(index_t group_size) {
  if constexpr (std::is_same_v<Policy, qlr::quant::Nf4>)
    return Policy({.block_size = group_size, .scale_type = qlr::ScaleType::f16});
  else
    return Policy({.group_size = group_size, .scale_type = qlr::ScaleType::f16});
}

/// qlr's GEMM on path `isa` (or Auto), rotating through packed copies, with FP32
/// activations (`activation_bits` = 0: weight-only, their split into limbs timed) or
/// activations quantized per token to `activation_bits` (once, untimed: oneDNN's figure
/// excludes that step too).
template <class Policy>
void bench_qlr(benchmark::State& state, index_t m, index_t n, index_t k, int threads,
               kernels::Isa isa, index_t group_size, int activation_bits) {
  qlr::set_num_threads(threads);
  using Weights = kernels::DotWeights<typename Policy::format>;
  struct Copies {
    std::deque<Weights> copies;
    double bytes;
  };
  const auto& [copies, bytes] =
      kept_setup<Copies>(setup_key(typeid(Weights).name(), n, k, group_size), [&] {
        // f16 scales, as checkpoints store them; the packed form keeps them f16.
        const auto q = make_policy<Policy>(group_size).quantize(random_matrix(n, k, 0.02f, 1));
        const Weights packed(q);
        const double size = static_cast<double>(packed.code_bytes() + packed.parameter_bytes());
        Copies made{std::deque<Weights>(copies_for(static_cast<std::size_t>(size)), packed), size};
        const Matrix x1 = random_matrix(1, k, 1.0f, 3);
        const auto a1 = qlr::quant::quantize_per_token(x1);
        Matrix y1(1, n);
        for (const auto& w : made.copies)  // first reads, untimed: one GEMV per copy
          kernels::gemm(w, a1.view(), output(y1));
        return made;
      });
  const Matrix x = random_matrix(m, k, 1.0f, 2);
  const auto a = qlr::quant::quantize_per_token(x, {.bits = activation_bits == 0 ? 8 : activation_bits});
  const qlr::ActivationCodes codes = a.view();
  Matrix y = Matrix::Constant(m, n, 1.0f);
  const auto multiply = [&](const Weights& w) {
    if (activation_bits == 0)
      kernels::gemm(w, input(x), output(y), {}, isa);
    else
      kernels::gemm(w, codes, output(y), {}, isa);
  };
  std::size_t next = 0;
  for (auto _ : state) {
    multiply(copies[next]);
    next = (next + 1) % copies.size();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, bytes, m, n, k);
}

/// Y = X·Wᵀ with Eigen FP32, the columns of Y split over qlr's threads as qlr's kernels
/// split them; prepare(begin, end) runs first on each slice of W's rows.
template <class Weight, class Prepare>
void eigen_product(const Matrix& x, const Weight& w, Matrix& y, const Prepare& prepare) {
  qlr::parallel_for(w.rows(), 64, [&](index_t begin, index_t end) {
    prepare(begin, end);
    y.middleCols(begin, end - begin).noalias() = x * w.middleRows(begin, end - begin).transpose();
  });
}

/// Eigen FP32 on the same shape, rotating through copies like qlr's benchmark.
void bench_eigen(benchmark::State& state, index_t m, index_t n, index_t k, int threads) {
  qlr::set_num_threads(threads);
  const double bytes = 4.0 * static_cast<double>(n) * static_cast<double>(k);
  // The copies live in qlr's aligned buffers, as qlr's weights do, so both read the same
  // kind of memory (huge pages where the system gives them).
  using WeightMap = Eigen::Map<const Matrix, Eigen::Aligned64>;
  const auto& copies = kept_setup<std::deque<qlr::AlignedVector<float>>>(setup_key("eigen", n, k), [&] {
    const Matrix w = random_matrix(n, k, 0.02f, 1);
    std::deque<qlr::AlignedVector<float>> made(copies_for(static_cast<std::size_t>(bytes)),
                                               qlr::AlignedVector<float>(w.data(), w.data() + w.size()));
    const Matrix x1 = random_matrix(1, k, 1.0f, 3);
    Matrix y1(1, n);
    for (const auto& c : made) y1.noalias() = x1 * WeightMap(c.data(), n, k).transpose();  // first reads, untimed
    return made;
  });
  const Matrix x = random_matrix(m, k, 1.0f, 2);
  Matrix y = Matrix::Constant(m, n, 1.0f);
  std::size_t next = 0;
  for (auto _ : state) {
    eigen_product(x, WeightMap(copies[next].data(), n, k), y, [](index_t, index_t) {});
    next = (next + 1) % copies.size();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, bytes, m, n, k);
}

/// dX (M×K) = dY (M×N)·Ŵ, the training backward's input gradient (kernels::input_grad), for
/// a W4 g128 f16 weight on path `isa`; `eigen` multiplies the FP32 weight instead.
void bench_dx(benchmark::State& state, index_t m, index_t n, index_t k, int threads,
              std::optional<kernels::Isa> isa) {
  qlr::set_num_threads(threads);
  const Matrix w = random_matrix(n, k, 0.02f, 1);
  const Matrix dy = random_matrix(m, n, 1.0f, 2);
  Matrix dx(m, k);
  if (!isa) {
    for (auto _ : state) {
      qlr::parallel_for(k, 64, [&](index_t begin, index_t end) {
        dx.middleCols(begin, end - begin).noalias() = dy * w.middleCols(begin, end - begin);
      });
      benchmark::DoNotOptimize(dx.data());
    }
    set_counters(state, 4.0 * static_cast<double>(n * k), m, n, k);
    return;
  }
  const kernels::DotWeights packed(make_policy<qlr::quant::IntAsym<4>>(128).quantize(w));
  const kernels::DotWeightView view = packed.view();
  for (auto _ : state) {
    kernels::input_grad(kernels::weight_tiles(view), input(dy), output(dx), *isa);
    benchmark::DoNotOptimize(dx.data());
  }
  set_counters(state, static_cast<double>(packed.code_bytes() + packed.parameter_bytes()), m, n, k);
}

using Floats8 = float __attribute__((vector_size(32)));   ///< one ymm
using Floats16 = float __attribute__((vector_size(64)));  ///< one zmm (two ymm without AVX-512)

/// 16 independent chains of `Vector` FMAs, `steps` long: more than latency × issue width on
/// the x86 cores here, so the loop runs at the core's FMA peak. Returns their sum.
template <class Vector>
float fma_chains(std::int64_t steps) {
  constexpr int chains = 16;
  Vector acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = Vector{} + static_cast<float>(c);
  const Vector a = Vector{} + 0.999999f, b = Vector{} + 1e-7f;
  for (std::int64_t i = 0; i < steps; ++i)
    for (int c = 0; c < chains; ++c) acc[c] = acc[c] * a + b;  // contracted to an FMA
  float total = 0.0f;
  for (int c = 0; c < chains; ++c)
    for (std::size_t j = 0; j < sizeof(Vector) / sizeof(float); ++j) total += acc[c][j];
  return total;
}

/// The core's FP32 FMA peak: fma_chains on every thread, in registers only.
template <class Vector>
void bench_fma_peak(benchmark::State& state, int threads) {
  constexpr std::int64_t steps = 1 << 16;
  qlr::set_num_threads(threads);
  std::vector<float> sink(static_cast<std::size_t>(threads), 0.0f);
  for (auto _ : state) {
    qlr::parallel_for(threads, 1, [&](index_t begin, index_t end) {
      for (index_t thread = begin; thread < end; ++thread)
        sink[static_cast<std::size_t>(thread)] = fma_chains<Vector>(steps);
    });
    benchmark::DoNotOptimize(sink.data());
  }
  state.counters["GOPs"] =
      benchmark::Counter(2.0 * static_cast<double>(threads) * 16 * steps *
                             static_cast<double>(sizeof(Vector) / sizeof(float)),
                         benchmark::Counter::kIsIterationInvariantRate);
}

/// The naive path: dequantize the INT4 weight to FP32, then Eigen; both timed.
void bench_naive(benchmark::State& state, index_t m, index_t n, index_t k, int threads) {
  qlr::set_num_threads(threads);
  const auto q = qlr::quant::IntAsym<4>({.group_size = 128}).quantize(random_matrix(n, k, 0.02f, 1));
  const Matrix x = random_matrix(m, k, 1.0f, 2);
  Matrix w = Matrix::Constant(n, k, 1.0f);
  Matrix y = Matrix::Constant(m, n, 1.0f);
  for (auto _ : state) {
    eigen_product(x, w, y, [&](index_t begin, index_t end) {
      for (index_t o = begin; o < end; ++o) qlr::quant::dequantize_row(q, o, w.row(o).data());
    });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, static_cast<double>(q.codes().size()) + 8.0 * static_cast<double>(q.scales().size()), m, n, k);
}

#if QLR_BENCH_HAVE_ONEDNN
/// oneDNN's u8×s8 → f32 matmul with prepacked weights and per-column scales (its fastest
/// INT8 form on VNNI), rotating through weight copies like qlr's benchmark.
void bench_onednn(benchmark::State& state, index_t m, index_t n, index_t k, int threads) {
  struct Setup {
    std::unique_ptr<qlr_bench::OnednnMatmul> matmul;
    std::vector<std::uint8_t> x;
    int copies;
  };
  const double bytes = static_cast<double>(n * k) + 4.0 * static_cast<double>(n);
  const auto& setup = kept_setup<Setup>(setup_key("onednn", n, k, m), [&] {
    std::mt19937 rng(1);
    std::uniform_int_distribution<int> code(-127, 127);
    std::vector<std::int8_t> weights(static_cast<std::size_t>(n * k));
    for (auto& w : weights) w = static_cast<std::int8_t>(code(rng));
    Setup made{nullptr, std::vector<std::uint8_t>(static_cast<std::size_t>(m * k)),
               static_cast<int>(copies_for(static_cast<std::size_t>(bytes)))};
    for (auto& v : made.x) v = static_cast<std::uint8_t>(code(rng) + 128);
    const std::vector<float> scales(static_cast<std::size_t>(n), 1e-3f);
    made.matmul = std::make_unique<qlr_bench::OnednnMatmul>(m, n, k, scales.data());
    std::vector<float> y(static_cast<std::size_t>(m * n));
    for (int c = 0; c < made.copies; ++c) made.matmul->add_weights(weights.data());
    for (int c = 0; c < made.copies; ++c) made.matmul->run(c, made.x.data(), y.data(), threads);  // first reads
    return made;
  });
  std::vector<float> y(static_cast<std::size_t>(m * n));
  int next = 0;
  for (auto _ : state) {
    setup.matmul->run(next, setup.x.data(), y.data(), threads);
    next = (next + 1) % setup.copies;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, bytes, m, n, k);
}
#endif

/// The input side of a rotated W4A8 layer: M tokens of K rotated online (randomized
/// Hadamard, fused) and quantized per token to INT8 — or, `rotate` false, only quantized —
/// to compare with the layer's GEMV (w4a8_gemv of the same N, K). Activations are in cache,
/// as they are in an engine.
void bench_rotate_quant(benchmark::State& state, index_t m, index_t k, int threads, bool rotate) {
  qlr::set_num_threads(threads);
  const qlr::rotate::RandomizedHadamard rotation(k, 1);
  const Matrix x = random_matrix(m, k, 1.0f, 2);
  for (auto _ : state) {
    auto a = rotate ? qlr::layers::rotate_quantize_per_token(rotation, x) : qlr::quant::quantize_per_token(x);
    benchmark::DoNotOptimize(a.codes.data());
  }
  state.counters["GBps"] = benchmark::Counter(4.0 * static_cast<double>(m * k), benchmark::Counter::kIsIterationInvariantRate);
}

std::string shape_name(const char* kernel, const char* impl, index_t m, index_t n, index_t k, int threads) {
  return std::string(kernel) + "/" + impl + "/M:" + std::to_string(m) + "/N:" + std::to_string(n) +
         "/K:" + std::to_string(k) + "/threads:" + std::to_string(threads);
}

void register_all() {
  qlr_bench::register_memread();
  for (const int threads : {1, 2}) {
    const std::string suffix = "/threads:" + std::to_string(threads);
#if defined(__AVX512F__)
    benchmark::RegisterBenchmark(("fma_peak/qlr" + suffix).c_str(), bench_fma_peak<Floats16>,
                                 threads)
        ->UseRealTime();
#endif
    benchmark::RegisterBenchmark(("fma_peak/qlr-avx2" + suffix).c_str(), bench_fma_peak<Floats8>,
                                 threads)
        ->UseRealTime();
  }
  std::vector<std::pair<std::string, kernels::Isa>> paths{{"qlr", kernels::best_isa()}};
  for (const kernels::Isa isa : kernels::available_isas())
    if (isa != kernels::Isa::reference) paths.emplace_back(std::string("qlr-") + kernels::to_string(isa), isa);
  using qlr::quant::IntAsym;
  using qlr::quant::IntSym;
  const auto add = [](const std::string& name, auto function, auto... args) {
    benchmark::RegisterBenchmark(name.c_str(), function, args...)->UseRealTime()->Unit(benchmark::kMicrosecond);
  };
  for (const auto& [n, k] : llm_nk) {
    for (const index_t m : {1, 16, 64, 512}) {
      const char* shape = m == 1 ? "gemv" : "gemm";
      const auto kernel = [&](const char* format) { return std::string(format) + "_" + shape; };
      for (const int threads : {1, 2}) {
        for (const auto& [impl, isa] : paths) {
          if (isa == kernels::Isa::portable && m > 16) continue;  // minutes per run: not informative
          const auto name = [&](const char* format) { return shape_name(kernel(format).c_str(), impl.c_str(), m, n, k, threads); };
          add(name("w4"), bench_qlr<IntAsym<4>>, m, n, k, threads, isa, index_t{128}, 0);
          add(name("w8"), bench_qlr<IntSym<8>>, m, n, k, threads, isa, index_t{0}, 0);
          add(name("w8a8"), bench_qlr<IntSym<8>>, m, n, k, threads, isa, index_t{0}, 8);
          add(name("w4a8"), bench_qlr<IntSym<4>>, m, n, k, threads, isa, index_t{128}, 8);
          add(name("w4a4"), bench_qlr<IntSym<4>>, m, n, k, threads, isa, index_t{128}, 4);
          add(name("w3"), bench_qlr<IntAsym<3>>, m, n, k, threads, isa, index_t{128}, 0);
          add(name("w2"), bench_qlr<IntAsym<2>>, m, n, k, threads, isa, index_t{128}, 0);
          add(name("w3a8"), bench_qlr<IntAsym<3>>, m, n, k, threads, isa, index_t{128}, 8);
          add(name("w2a8"), bench_qlr<IntAsym<2>>, m, n, k, threads, isa, index_t{128}, 8);
          add(name("nf4"), bench_qlr<qlr::quant::Nf4>, m, n, k, threads, isa, index_t{64}, 0);
        }
        // Peers: Eigen FP32 and oneDNN s8 do not depend on qlr's format; plot.py pairs them
        // with every kernel of their shape.
        add(shape_name(kernel("w4").c_str(), "eigen", m, n, k, threads), bench_eigen, m, n, k, threads);
        add(shape_name(kernel("w4").c_str(), "naive", m, n, k, threads), bench_naive, m, n, k, threads);
#if QLR_BENCH_HAVE_ONEDNN
        add(shape_name(kernel("w8a8").c_str(), "onednn", m, n, k, threads), bench_onednn, m, n, k, threads);
#endif
        if (m == 512) {  // the training backward's dX = dY·Ŵ, at a micro-batch of 256 tokens
          for (const auto& [impl, isa] : paths)
            if (isa != kernels::Isa::portable)
              add(shape_name("dx_gemm", impl.c_str(), 256, n, k, threads), bench_dx, 256, n, k,
                  threads, std::optional<kernels::Isa>(isa));
          add(shape_name("dx_gemm", "eigen", 256, n, k, threads), bench_dx, 256, n, k, threads,
              std::optional<kernels::Isa>());
        }
        if (m == 1) {
          add(shape_name("rotate_int8", "qlr", m, n, k, threads), bench_rotate_quant, m, k, threads, true);
          add(shape_name("quant_int8", "qlr", m, n, k, threads), bench_rotate_quant, m, k, threads, false);
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // oneDNN's OpenMP workers would otherwise spin between its runs, on the cores qlr's
  // benchmarks then use.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  // This binary links OpenMP (for oneDNN), and Eigen's GEMM then runs on every core by
  // itself: its "threads:1" peer figures at M >= 16 were 2-thread ones until 2026-12-07.
  // Threads are qlr's to give (eigen_product splits the output over them).
  Eigen::setNbThreads(1);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("qlr_version", qlr::version_string);
  benchmark::AddCustomContext("qlr_isa", kernels::to_string(kernels::best_isa()));
  benchmark::AddCustomContext("qlr_cpu_features", qlr::to_string(qlr::cpu_features()));
  benchmark::AddCustomContext("compiler", __VERSION__);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
