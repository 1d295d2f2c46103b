// SPDX-License-Identifier: Apache-2.0
// Thread control: parallel_for covers every index once for any thread count, nests, and
// passes exceptions to the caller.
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "qlr/core/parallel.hpp"

using qlr::index_t;

namespace {
struct ThreadCountGuard {
  int saved = qlr::num_threads();
  ~ThreadCountGuard() { qlr::set_num_threads(saved); }
};
}  // namespace

TEST_CASE("parallel_for: every index exactly once, in contiguous ranges", "[core][parallel]") {
  const ThreadCountGuard guard;
  const int threads = GENERATE(1, 2, 3, 8);
  const index_t count = GENERATE(0, 1, 2, 7, 1000);
  const index_t grain = GENERATE(1, 16);
  CAPTURE(threads, count, grain);
  qlr::set_num_threads(threads);
  REQUIRE(qlr::num_threads() == threads);
  std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
  std::atomic<int> ranges{0};
  std::atomic<bool> empty_range{false};  // Catch2 assertions are not thread-safe: record
  qlr::parallel_for(count, grain, [&](index_t begin, index_t end) {
    if (begin >= end) empty_range = true;
    ++ranges;
    for (index_t i = begin; i < end; ++i) ++hits[static_cast<std::size_t>(i)];
  });
  for (const auto& h : hits) REQUIRE(h.load() == 1);
  CHECK_FALSE(empty_range.load());
  CHECK(ranges.load() <= threads);
}

TEST_CASE("parallel_for: nested loops run serially inside a task", "[core][parallel]") {
  const ThreadCountGuard guard;
  qlr::set_num_threads(2);
  std::atomic<int> total{0};
  qlr::parallel_for(4, 1, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i)
      qlr::parallel_for(10, 1, [&](index_t b, index_t e) { total += static_cast<int>(e - b); });
  });
  CHECK(total.load() == 40);
}

TEST_CASE("parallel_for: an exception in a task reaches the caller", "[core][parallel]") {
  const ThreadCountGuard guard;
  qlr::set_num_threads(2);
  CHECK_THROWS_WITH(qlr::parallel_for(100, 1,
                                      [](index_t begin, index_t) {
                                        if (begin > 0) throw std::runtime_error("task failed");
                                      }),
                    "task failed");
  int after = 0;  // the pool still works after a failed job
  qlr::parallel_for(1, 1, [&](index_t, index_t) { after = 1; });
  CHECK(after == 1);
}

TEST_CASE("set_num_threads: rejects n < 1", "[core][parallel]") {
  CHECK_THROWS_WITH(qlr::set_num_threads(0), Catch::Contains("n = 0"));
}
