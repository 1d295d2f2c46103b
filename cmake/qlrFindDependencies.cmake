# SPDX-License-Identifier: Apache-2.0
# The third-party packages qlr::qlr brings to its users, all from Debian's -dev packages.
# find_package(... REQUIRED) here, find_dependency() in qlrConfig.cmake.in with the same versions.
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(xsimd 8.1 REQUIRED)
include(qlrXsimdWithoutXtl)
find_package(fmt 9 REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Threads REQUIRED)
