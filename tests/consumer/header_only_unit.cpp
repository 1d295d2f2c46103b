// SPDX-License-Identifier: Apache-2.0
// Consumer check, the program's second unit: always header-only, so the mixed program links
// a unit that compiled its own kernels and compositions beside one that uses qlr::compiled's.
#include "consumer_checks.hpp"

int header_only_unit(const std::filesystem::path& scratch) {
  return check_qlr("header-only unit 2", scratch);
}
