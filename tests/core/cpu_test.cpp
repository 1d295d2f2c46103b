// SPDX-License-Identifier: Apache-2.0
// CPU feature detection agrees with the kernel's own report (/proc/cpuinfo on Linux) and is
// queried once.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "qlr/core/cpu.hpp"

namespace {
std::set<std::string> proc_cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}
}  // namespace

TEST_CASE("cpu_features: matches the flags Linux reports", "[core][cpu]") {
  const auto& f = qlr::cpu_features();
  CHECK(&f == &qlr::cpu_features());  // one detection per process
  WARN("cpu features: " << qlr::to_string(f));
  const auto flags = proc_cpuinfo_flags();
  if (flags.empty() || !QLR_ARCH_X86) {
    WARN("no x86 /proc/cpuinfo flags here: only internal consistency is checked");
  } else {
    CHECK(f.avx2 == flags.count("avx2"));
    CHECK(f.fma == flags.count("fma"));
    CHECK(f.f16c == flags.count("f16c"));
    CHECK(f.avx512f == flags.count("avx512f"));
    CHECK(f.avx512bw == flags.count("avx512bw"));
    CHECK(f.avx512vl == flags.count("avx512vl"));
    CHECK(f.avx512vnni == flags.count("avx512_vnni"));
    CHECK(f.avx_vnni == flags.count("avx_vnni"));
  }
  if (f.avx512bw || f.avx512vl || f.avx512vnni) CHECK(f.avx512f);
  if (f.avx_vnni) CHECK(f.avx2);
}
