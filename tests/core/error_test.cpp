// SPDX-License-Identifier: Apache-2.0
// qlr::Error: a std::runtime_error with a kind, thrown by QLR_CHECK with a formatted message.
#include <catch2/catch.hpp>

#include <stdexcept>

#include "qlr/core/error.hpp"

namespace {
int checked_half(int n) {
  QLR_CHECK(n % 2 == 0, invalid_argument, "checked_half: n = {}; expected an even number", n);
  return n / 2;
}
}  // namespace

TEST_CASE("QLR_CHECK: passes through when the condition holds, throws qlr::Error otherwise",
          "[core][error]") {
  CHECK(checked_half(8) == 4);
  try {
    checked_half(7);
    FAIL("no exception");
  } catch (const qlr::Error& e) {
    CHECK(e.code() == qlr::Errc::invalid_argument);
    CHECK(std::string(e.what()) == "checked_half: n = 7; expected an even number");
  }
  CHECK_THROWS_AS(checked_half(3), std::runtime_error);  // catchable as the std base
}
