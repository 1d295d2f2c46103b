// SPDX-License-Identifier: Apache-2.0
// Training's element-wise work beside the machine's streaming limit in the same binary:
//   adamw/qlr/params:<n>/threads:1          train::AdamW::step over one n-parameter tensor
//   adamw/qlr-<isa>/params:<n>/threads:1    each kernel path's step (reference: the scalar loop)
//   adamw/stream/params:<n>/threads:1       a pass over the same bytes: 16 read, 12 written
//                                           per parameter (θ, g, m, v in; θ, m, v out)
// Counters: GBps of those 28 bytes per parameter, and Mparams/s. 10 M parameters (280 MB)
// live in DRAM.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <string>

#include <xsimd/xsimd.hpp>

#include "bench_support.hpp"
#include "qlr/core/aligned.hpp"
#include "qlr/kernels/adamw.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/train/adamw.hpp"
#include "qlr/train/parameter.hpp"

namespace {

using qlr::index_t;
namespace kernels = qlr::kernels;

/// θ, g, m, v of n parameters in qlr's aligned (huge-page) memory, every page touched.
struct Tensors {
  qlr::AlignedVector<float> theta, grad, m, v;
  explicit Tensors(index_t n)
      : theta(static_cast<std::size_t>(n)), grad(theta.size()), m(theta.size()), v(theta.size()) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::size_t i = 0; i < theta.size(); ++i) {
      theta[i] = normal(rng);
      grad[i] = 1e-3f * normal(rng);
      m[i] = 0.0f;
      v[i] = 0.0f;
    }
  }
};

void set_rates(benchmark::State& state, index_t n) {
  state.counters["GBps"] = benchmark::Counter(28.0 * static_cast<double>(n),
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["Mparams/s"] = benchmark::Counter(
      1e-6 * static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

/// train::AdamW::step, lr 1e-4: the optimizer as a training loop calls it.
void bench_optimizer(benchmark::State& state, index_t n) {
  Tensors t(n);
  const qlr::train::ParameterList params{
      {"w", {n}, std::span<float>(t.theta.data(), t.theta.size()),
       std::span<float>(t.grad.data(), t.grad.size())}};
  qlr::train::AdamW adam(params);
  for (auto _ : state) {
    adam.step(params, 1e-4);
    benchmark::ClobberMemory();
  }
  set_rates(state, n);
}

/// Kernel path `isa` alone, with the constants of a mid-training step.
void bench_kernel(benchmark::State& state, index_t n, kernels::Isa isa) {
  Tensors t(n);
  const kernels::AdamWStepFn step = kernels::adamw_step_for(isa);
  const kernels::AdamWConstants c{.decay = 1.0f, .step_size = 1e-4f, .bias2_sqrt = 0.5f};
  for (auto _ : state) {
    step(c, n, t.theta.data(), t.grad.data(), t.m.data(), t.v.data());
    benchmark::ClobberMemory();
  }
  set_rates(state, n);
}

/// 64 bytes of floats as one GCC vector (one zmm with AVX-512, four xmm at SSE2).
using Floats64B = float __attribute__((vector_size(64)));

/// The streaming limit for AdamW's traffic: θ += g, m += g, v += g, 16 floats at a time.
void bench_stream(benchmark::State& state, index_t n) {
  Tensors t(n);
  for (auto _ : state) {
    for (index_t i = 0; i + 16 <= n; i += 16) {
      Floats64B theta, g, m, v;
      std::memcpy(&theta, t.theta.data() + i, sizeof theta);
      std::memcpy(&g, t.grad.data() + i, sizeof g);
      std::memcpy(&m, t.m.data() + i, sizeof m);
      std::memcpy(&v, t.v.data() + i, sizeof v);
      theta += g;
      m += g;
      v += g;
      std::memcpy(t.theta.data() + i, &theta, sizeof theta);
      std::memcpy(t.m.data() + i, &m, sizeof m);
      std::memcpy(t.v.data() + i, &v, sizeof v);
    }
    benchmark::ClobberMemory();
  }
  set_rates(state, n);
}

std::string name(const std::string& impl, index_t n) {
  return "adamw/" + impl + "/params:" + std::to_string(n) + "/threads:1";
}

void register_all() {
  const auto add = [](const std::string& label, auto function, auto... args) {
    benchmark::RegisterBenchmark(label.c_str(), function, args...)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  for (const index_t n : {index_t{10'000'000}, index_t{100'000}}) {
    add(name("qlr", n), bench_optimizer, n);
    for (const kernels::Isa isa : kernels::available_isas())
      if (isa != kernels::Isa::avx_vnni)  // avx_vnni runs avx2's
        add(name(std::string("qlr-") + kernels::to_string(isa), n), bench_kernel, n, isa);
    add(name("stream", n), bench_stream, n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  // The portable path's xsimd arch is the unit's own: sse2 unless built with -march flags.
  benchmark::AddCustomContext("qlr_portable_arch", xsimd::default_arch::name());
  return qlr_bench::run_benchmarks(argc, argv);
}
