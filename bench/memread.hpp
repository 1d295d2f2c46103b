// SPDX-License-Identifier: Apache-2.0
// The machine's memory-read limit, in the same binary as the benchmarks that compare to it:
// `memread/streams:<s>[/prefetch]/threads:<t>` reads a buffer far larger than the caches
// with s interleaved row streams (a GEMV's pattern), counter GBps.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "qlr/core/aligned.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/types.hpp"

namespace qlr_bench {

/// Weights are rotated through enough copies to exceed this, so that each iteration reads
/// them from DRAM as a decoding engine does, not from the last-level cache. Every copy is
/// read once before timing: on the VMs here the first read of freshly written memory runs
/// at under 1 GB/s (85 ms for 64 MB, then 2 ms), which no engine pays twice.
/// QLR_BENCH_FOOTPRINT_MB overrides it (the CI smoke run uses a small one).
inline const std::size_t footprint_bytes = [] {
  const char* mb = std::getenv("QLR_BENCH_FOOTPRINT_MB");
  return (mb != nullptr ? std::strtoull(mb, nullptr, 10) : 512ull) << 20;
}();

/// 64 bytes of floats as one GCC vector: a zmm register with -march=native on AVX-512,
/// two ymm on AVX2.
using Floats64B = float __attribute__((vector_size(64)));

/// Sums `streams` rows of a far-larger-than-cache buffer together, 64 bytes per row per step
/// into independent accumulators: the read pattern of a GEMV over that many rows.
inline float read_rows(const float* data, std::size_t row_floats, std::size_t rows, int streams,
                bool prefetch) {
  Floats64B acc[8] = {};
  const auto step = static_cast<std::size_t>(streams);
  for (std::size_t r = 0; r + step <= rows; r += step) {
    for (std::size_t i = 0; i < row_floats; i += 16) {
      for (std::size_t s = 0; s < step; ++s) {
        const float* p = data + (r + s) * row_floats + i;
        if (prefetch) __builtin_prefetch(p + 512);  // 2 KB ahead, as a tuned GEMV does
        Floats64B v;
        std::memcpy(&v, p, sizeof v);
        acc[s] += v;
      }
    }
  }
  float total = 0.0f;
  for (const auto& a : acc)
    for (int j = 0; j < 16; ++j) total += a[j];
  return total;
}

/// The machine's read limit over 512 MB with `streams` interleaved row streams, with or
/// without software prefetch.
inline void bench_memread(benchmark::State& state, int streams, bool prefetch, int threads) {
  qlr::set_num_threads(threads);
  constexpr std::size_t row_floats = 4096;
  const std::size_t rows = footprint_bytes / sizeof(float) / row_floats;
  const qlr::AlignedVector<float> buffer(rows * row_floats, 1.0f);  // as the weights: misaligned 64-byte loads read two lines
  benchmark::DoNotOptimize(read_rows(buffer.data(), row_floats, rows, 1, false));  // first read, untimed
  for (auto _ : state) {
    qlr::parallel_for(static_cast<qlr::index_t>(rows), 64, [&](qlr::index_t begin, qlr::index_t end) {
      const float sum = read_rows(buffer.data() + static_cast<std::size_t>(begin) * row_floats, row_floats,
                                  static_cast<std::size_t>(end - begin), streams, prefetch);
      benchmark::DoNotOptimize(sum);
    });
    benchmark::ClobberMemory();
  }
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(buffer.size() * sizeof(float)),
                                              benchmark::Counter::kIsIterationInvariantRate);
}

/// Registers the memread variants: 1, 4 and 8 streams, with and without software prefetch,
/// 1 and 2 threads.
inline void register_memread() {
  for (const int threads : {1, 2}) {
    for (const int streams : {1, 4, 8}) {
      for (const bool prefetch : {false, true}) {
        const std::string name = "memread/streams:" + std::to_string(streams) +
                                 (prefetch ? "/prefetch" : "") + "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), bench_memread, streams, prefetch, threads)
            ->UseRealTime()->Unit(benchmark::kMillisecond);
      }
    }
  }
}

}  // namespace qlr_bench
