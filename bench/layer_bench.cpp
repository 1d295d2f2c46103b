// SPDX-License-Identifier: Apache-2.0
// QuantizedLinear with adapters, 4096×4096, weights read from DRAM as in decoding:
//   lora_<w4|w4a8>/qlr/r:<r>/M:<m>/threads:<t>    r = 0 is the base layer, the LoRA overhead's
//                                                 baseline in the same run
//   multi_adapter/qlr/<batched|uniform|separate>/adapters:8/rows:<8|64>/threads:<t>
//                                                 one forward of 8·p rows, p per adapter,
//                                                 against the same rows all on one adapter
//                                                 (what heterogeneity costs) and against 8
//                                                 forwards of p rows: p = 8 and p = 1
//                                                 (decoding, one token per request)
// Counters GBps (base weight bytes per second) and GOPs (2·M·N·K per second).
#include <benchmark/benchmark.h>

#include <deque>
#include <random>
#include <string>
#include <vector>

#include "qlr/adapter/lora.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/quant/int_group.hpp"
#include "bench_support.hpp"

namespace {

using qlr::index_t;
using qlr::Matrix;
using qlr_bench::random_matrix;
namespace layers = qlr::layers;
namespace quant = qlr::quant;

constexpr index_t n = 4096, k = 4096;

/// The weight-only INT4 g128 layer (FP32 activations).
using W4Layer = layers::QuantizedLinear<quant::IntAsym<4>>;
/// INT4 g128 weights × per-token INT8 activations.
using W4A8Layer = layers::QuantizedLinear<quant::IntSym<4>, qlr::rotate::Identity,
                                          layers::Int8Activations>;

/// A LoRA adapter of rank r with small random factors (a trained one: B ≠ 0).
qlr::adapter::Lora random_lora(index_t r, std::uint32_t seed) {
  return qlr::adapter::Lora(random_matrix(r, k, 0.02f, seed), random_matrix(n, r, 0.02f, seed + 1),
                            2.0 * static_cast<double>(r));
}

/// Bytes a forward reads of the base: packed codes, group scales and zeros.
template <class Layer>
double base_bytes(const Layer& layer) {
  return static_cast<double>(layer.packed_base().memory_bytes());
}

/// Copies of one layer (with `adapters` LoRAs of rank r attached) that together exceed the
/// footprint, each read once before timing.
template <class Layer>
std::deque<Layer> layer_copies(index_t r, int adapters) {
  Layer layer(random_matrix(n, k, 0.02f, 1), quant::DefaultQuantizer<typename Layer::format>({.group_size = 128}));
  for (int a = 0; a < adapters; ++a)
    layer.attach("adapter" + std::to_string(a), random_lora(r, 10 + 2 * static_cast<std::uint32_t>(a)));
  std::deque<Layer> copies(qlr_bench::copies_for(static_cast<std::size_t>(base_bytes(layer))), layer);
  const Matrix x1 = random_matrix(1, k, 1.0f, 3);
  for (const Layer& c : copies) benchmark::DoNotOptimize(c.forward(x1).data());
  return copies;
}

template <class Layer>
void bench_lora(benchmark::State& state, index_t r, index_t m, int threads) {
  qlr::set_num_threads(threads);
  const auto& copies = qlr_bench::kept_setup<std::deque<Layer>>(
      qlr_bench::setup_key(typeid(Layer).name(), n, k, r), [&] { return layer_copies<Layer>(r, r > 0); });
  const Matrix x = random_matrix(m, k, 1.0f, 2);
  Matrix y(m, n);
  std::size_t next = 0;
  for (auto _ : state) {
    copies[next].forward(x, y);
    next = (next + 1) % copies.size();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  qlr_bench::set_counters(state, base_bytes(copies.front()), m, n, k);
}

/// How multi_adapter runs its 8·p rows.
enum class Batching { batched, uniform, separate };

/// 8 adapters of rank 16, `rows_per_adapter` rows each: one batched forward, the same forward
/// with every row on adapter 0, or 8 forwards of each adapter's rows.
void bench_multi_adapter(benchmark::State& state, Batching mode, index_t rows_per_adapter,
                         int threads) {
  const bool batched = mode != Batching::separate;
  qlr::set_num_threads(threads);
  constexpr int adapters = 8;
  const index_t m = adapters * rows_per_adapter;
  const auto& copies = qlr_bench::kept_setup<std::deque<W4A8Layer>>(
      qlr_bench::setup_key("multi_adapter", n, k, adapters),
      [&] { return layer_copies<W4A8Layer>(16, adapters); });
  const Matrix x = random_matrix(m, k, 1.0f, 2);
  std::vector<index_t> ids(static_cast<std::size_t>(m));
  for (index_t i = 0; i < m; ++i)
    ids[static_cast<std::size_t>(i)] = mode == Batching::uniform ? 0 : i / rows_per_adapter;
  Matrix y(m, n);
  std::vector<Matrix> parts(adapters, Matrix(rows_per_adapter, n));
  std::size_t next = 0;
  for (auto _ : state) {
    if (batched) {
      copies[next].forward(x, y, ids);
      next = (next + 1) % copies.size();
    } else {
      // Each forward on its own copy: an engine that runs each adapter's rows through the
      // whole model reads every layer from DRAM once per adapter.
      for (int a = 0; a < adapters; ++a) {
        const auto rows = std::span(ids).subspan(static_cast<std::size_t>(a * rows_per_adapter),
                                                 rows_per_adapter);
        copies[next].forward(x.middleRows(a * rows_per_adapter, rows_per_adapter),
                             parts[static_cast<std::size_t>(a)], rows);
        next = (next + 1) % copies.size();
      }
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(parts.data());
    benchmark::ClobberMemory();
  }
  qlr_bench::set_counters(state, base_bytes(copies.front()) * (batched ? 1 : adapters), m, n, k);
}

void register_all() {
  const auto add = [](const std::string& name, auto function, auto... args) {
    benchmark::RegisterBenchmark(name.c_str(), function, args...)->UseRealTime()->Unit(
        benchmark::kMicrosecond);
  };
  for (const int threads : {1, 2}) {
    const std::string t = "/threads:" + std::to_string(threads);
    for (const index_t m : {1, 64, 512}) {
      for (const index_t r : {0, 16, 64}) {
        const std::string shape = "/r:" + std::to_string(r) + "/M:" + std::to_string(m) + t;
        add("lora_w4/qlr" + shape, bench_lora<W4Layer>, r, m, threads);
        add("lora_w4a8/qlr" + shape, bench_lora<W4A8Layer>, r, m, threads);
      }
    }
    for (const index_t rows_per_adapter : {8, 1}) {
      const std::string shape = "/adapters:8/rows:" + std::to_string(8 * rows_per_adapter) + t;
      for (const auto& [name, mode] :
           {std::pair{"batched", Batching::batched}, std::pair{"uniform", Batching::uniform},
            std::pair{"separate", Batching::separate}})
        add(std::string("multi_adapter/qlr/") + name + shape, bench_multi_adapter, mode,
            rows_per_adapter, threads);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  return qlr_bench::run_benchmarks(argc, argv);
}
