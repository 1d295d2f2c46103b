// SPDX-License-Identifier: Apache-2.0
// Consumer check, the program's first unit: built against qlr::compiled (QLR_COMPILED: it
// declares the kernels, compositions and readers that qlr::compiled defines).
#include <qlr/qlr.hpp>

#include "consumer_checks.hpp"

int header_only_unit(const std::filesystem::path& scratch);

int main(int argc, char** argv) {
  const std::filesystem::path scratch = argc > 1 ? argv[1] : "consumer-scratch";
#if !defined(QLR_COMPILED)
#  error "the consumer's first unit links qlr::compiled, which defines QLR_COMPILED"
#endif
  const int status = check_qlr("qlr::compiled unit", scratch) | header_only_unit(scratch);
  std::printf("qlr consumer: %s (qlr %s)\n", status == 0 ? "ok" : "FAILED", qlr::version_string);
  return status;
}
