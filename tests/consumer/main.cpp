// SPDX-License-Identifier: Apache-2.0
// Consumer check, the program's first unit: built against qlr::compiled in the mixed program
// (QLR_COMPILED: it declares the kernels and compositions that qlr::compiled defines) and
// header-only in the other.
#include <qlr/qlr.hpp>

#include "consumer_checks.hpp"

int header_only_unit(const std::filesystem::path& scratch);

int main(int argc, char** argv) {
  const std::filesystem::path scratch = argc > 1 ? argv[1] : "consumer-scratch";
#if defined(QLR_COMPILED)
  const char* unit = "qlr::compiled unit";
#else
  const char* unit = "header-only unit";
#endif
  const int status = check_qlr(unit, scratch) | header_only_unit(scratch);
  std::printf("qlr consumer: %s (qlr %s)\n", status == 0 ? "ok" : "FAILED", qlr::version_string);
  return status;
}
