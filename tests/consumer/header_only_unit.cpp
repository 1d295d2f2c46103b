// SPDX-License-Identifier: Apache-2.0
// Consumer check, the program's second unit: header-only, so the program links a unit that
// compiled its own kernels and compositions beside one that uses qlr::compiled's.
#include "consumer_checks.hpp"

#if defined(QLR_COMPILED)
#  error "the consumer's second unit is header-only"
#endif

int header_only_unit(const std::filesystem::path& scratch) {
  return check_qlr("header-only unit", scratch);
}
