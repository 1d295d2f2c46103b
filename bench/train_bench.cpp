// SPDX-License-Identifier: Apache-2.0
// Training's element-wise work beside the machine's streaming limit in the same binary:
//   adamw/qlr/params:<n>/threads:1          train::AdamW::step over one n-parameter tensor
//   adamw/qlr-<isa>/params:<n>/threads:1    each kernel path's step (reference: the scalar loop)
//   adamw/stream/params:<n>/threads:1       a pass over the same bytes: 16 read, 12 written
//                                           per parameter (θ, g, m, v in; θ, m, v out)
// Counters: GBps of those 28 bytes per parameter, and Mparams/s. 10 M parameters (280 MB)
// live in DRAM.
// A W4 g128 layer's backward beside its forward, N = K = <n>, M = 256 tokens:
//   layer/forward/n:<n>/m:<m>/threads:<t>     QuantizedLinear::forward (FP32 activations)
//   layer/dx/n:<n>/m:<m>/threads:<t>          QuantizedLinear::backward_input, dX = dY·Ŵ
//   layer/dx-<isa>/n:<n>/m:<m>/threads:<t>    kernels::input_grad on each path
//   layer/eigen-fp32-dx/n:<n>/m:<m>/threads:1 the same product on an FP32 weight, Eigen
//   layer/step/n:<n>/m:<m>/threads:<t>        a training step of a rank-16 LoRA on the layer:
//                                             TrainableLinear forward and backward, AdamW
// Counters: GOPs (2·M·N·K per second).
#include <cstring>
#include <random>
#include <string>

#include <benchmark/benchmark.h>
#include <xsimd/xsimd.hpp>

#include "bench_support.hpp"
#include "qlr/core/aligned.hpp"
#include "qlr/kernels/adamw.hpp"
#include "qlr/kernels/input_grad.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/train/adamw.hpp"
#include "qlr/train/linear.hpp"
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

/// The W4 (asymmetric, g128) layer of the layer benchmarks.
using W4Layer = qlr::layers::QuantizedLinear<qlr::quant::IntAsym<4>>;

/// The n×n layer, built once per shape.
const W4Layer& w4_layer(index_t n) {
  return qlr_bench::kept_setup<W4Layer>(qlr_bench::setup_key("w4-layer", n, n), [n] {
    return W4Layer(qlr_bench::random_matrix(n, n, 0.02f, 1),
                   qlr::quant::IntAsym<4>({.group_size = 128}));
  });
}

/// forward (dx = false) or backward_input (dx = true) of the layer, M = m tokens.
void bench_layer(benchmark::State& state, index_t n, index_t m, int threads, bool dx) {
  qlr::set_num_threads(threads);
  const W4Layer& layer = w4_layer(n);
  const qlr::Matrix x = qlr_bench::random_matrix(m, n, 1.0f, 2);
  const qlr::Matrix dy = qlr_bench::random_matrix(m, n, 1.0f, 3);
  qlr::Matrix out(m, n);
  for (auto _ : state) {
    if (dx)
      layer.backward_input(x, dy, out);
    else
      layer.forward(x, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  qlr_bench::set_counters(state, 0.0, m, n, n);
}

/// A training step: forward, backward (dX included) and AdamW on a rank-16 LoRA.
void bench_step(benchmark::State& state, index_t n, index_t m, int threads) {
  qlr::set_num_threads(threads);
  qlr::train::TrainableLinear<float> layer("model.layers.0.mlp.up_proj",
                                           qlr::train::FrozenBase<float>(w4_layer(n)));
  layer.add_adapter("default", {.rank = 16, .alpha = 32});
  const qlr::train::ParameterList params = layer.parameters();
  qlr::train::AdamW adam(params);
  const qlr::Matrix x = qlr_bench::random_matrix(m, n, 1.0f, 2);
  const qlr::Matrix dy = qlr_bench::random_matrix(m, n, 1.0f, 3);
  for (auto _ : state) {
    layer.zero_gradients();
    const qlr::Matrix y = layer.forward(x);
    const qlr::Matrix dx = layer.backward(dy);
    adam.step(params, 1e-4);
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  qlr_bench::set_counters(state, 0.0, m, n, n);
}

/// kernels::input_grad of the layer's packed weight on path `isa`.
void bench_dx_kernel(benchmark::State& state, index_t n, index_t m, int threads, kernels::Isa isa) {
  qlr::set_num_threads(threads);
  const kernels::DotWeightView view = w4_layer(n).packed_base().view();
  const qlr::Matrix dy = qlr_bench::random_matrix(m, n, 1.0f, 3);
  qlr::Matrix dx(m, n);
  for (auto _ : state) {
    kernels::input_grad(kernels::weight_tiles(view), qlr_bench::input(dy), qlr_bench::output(dx),
                        isa);
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  qlr_bench::set_counters(state, 0.0, m, n, n);
}

/// dX = dY·W on an FP32 weight through Eigen (one thread: Eigen is built without OpenMP).
void bench_eigen_dx(benchmark::State& state, index_t n, index_t m) {
  const qlr::Matrix w = qlr_bench::random_matrix(n, n, 0.02f, 1);
  const qlr::Matrix dy = qlr_bench::random_matrix(m, n, 1.0f, 3);
  qlr::Matrix dx(m, n);
  for (auto _ : state) {
    dx.noalias() = dy * w;
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  qlr_bench::set_counters(state, 0.0, m, n, n);
}

std::string layer_name(const std::string& impl, index_t n, index_t m, int threads) {
  return "layer/" + impl + "/n:" + std::to_string(n) + "/m:" + std::to_string(m) +
         "/threads:" + std::to_string(threads);
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
  constexpr index_t m = 256;
  for (const index_t n : {index_t{4096}, index_t{512}}) {
    for (const int threads : {1, 2}) {
      add(layer_name("forward", n, m, threads), bench_layer, n, m, threads, false);
      add(layer_name("dx", n, m, threads), bench_layer, n, m, threads, true);
      add(layer_name("step", n, m, threads), bench_step, n, m, threads);
      for (const kernels::Isa isa : kernels::available_isas())
        if (isa != kernels::Isa::avx_vnni && (isa != kernels::Isa::reference || n <= 512))
          add(layer_name(std::string("dx-") + kernels::to_string(isa), n, m, threads),
              bench_dx_kernel, n, m, threads, isa);
    }
    add(layer_name("eigen-fp32-dx", n, m, 1), bench_eigen_dx, n, m);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  // The portable path's xsimd arch is the unit's own: sse2 unless built with -march flags.
  benchmark::AddCustomContext("qlr_portable_arch", xsimd::default_arch::name());
  return qlr_bench::run_benchmarks(argc, argv);
}
