// SPDX-License-Identifier: Apache-2.0
// qlr's version, the one CMake's project() and qlrConfigVersion.cmake carry.
#pragma once

#define QLR_VERSION_MAJOR 0
#define QLR_VERSION_MINOR 1
#define QLR_VERSION_PATCH 0

namespace qlr {
/// The library version as "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
}  // namespace qlr
