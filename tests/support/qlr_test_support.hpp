// SPDX-License-Identifier: Apache-2.0
// Shared helpers of qlr's tests: seeded random matrices and the paths of real artifacts.
#pragma once

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/matrix.hpp"
#include "qlr/core/view.hpp"

namespace qlr::test {

/// A kernel's read-only view of `m` (row-major, packed rows).
inline ConstMatrixView input(const Matrix& m) { return {m.data(), m.rows(), m.cols(), m.cols()}; }
/// A kernel's writable view of `m`.
inline MatrixView output(Matrix& m) { return {m.data(), m.rows(), m.cols(), m.cols()}; }

/// N(0, sigma²) entries.
inline Matrix gaussian(std::mt19937& rng, index_t rows, index_t cols, float sigma = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sigma);
  Matrix m(rows, cols);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

/// Student-t entries with 3 degrees of freedom: the heavy tails of LLM weights, where an
/// element can sit tens of sigmas out.
inline Matrix heavy_tailed(std::mt19937& rng, index_t rows, index_t cols) {
  std::student_t_distribution<float> t(3.0f);
  Matrix m(rows, cols);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = t(rng);
  return m;
}

/// A fresh empty folder under the system's temporary folder, named after `name` and a
/// random number so that concurrent test runs do not share it; removed with everything in it
/// when the test that made it ends, pass or fail.
class TempFolder {
 public:
  /// Creates the folder.
  explicit TempFolder(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("qlr-" + name + "-" + std::to_string(std::random_device{}()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  /// Removes the folder; a failure to remove it must not hide the test's own result.
  ~TempFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  /// The path of `child` inside the folder.
  [[nodiscard]] std::filesystem::path operator/(const std::filesystem::path& child) const {
    return path_ / child;
  }
  /// The folder's path, for functions that take one.
  operator const std::filesystem::path&() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// The bytes of the file at `path` (empty when it cannot be read).
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The vendored stories260K checkpoint (data/stories260K), if this checkout has it.
inline std::optional<std::filesystem::path> stories260k_path() {
  const std::filesystem::path vendored =
      std::filesystem::path(QLR_DATA_DIR) / "stories260K" / "stories260K.bin";
  if (std::filesystem::exists(vendored)) return vendored;
  const std::filesystem::path shared =
      std::filesystem::path(QLR_SHARED_DATA_DIR) / "stories260K.bin";
  if (std::filesystem::exists(shared)) return shared;
  return std::nullopt;
}

/// stories260k_path(), or nullopt after a warning that the checks named `what` are skipped
/// (the model is vendored, so this happens only in a checkout without data/).
inline std::optional<std::filesystem::path> stories260k_path_or_warn(const char* what) {
  auto path = stories260k_path();
  if (!path) WARN("stories260K.bin not found in data/ or ../shared/data: " << what << " skipped");
  return path;
}

/// The most multiply-adds, m·n·k, of one shape in the full ([.slow]) kernel sweeps: every
/// value of each dimension still runs, with the others small, but the corners where all
/// three are large (129 × 2323 × 4096 costs the scalar oracle seconds per run) are left out;
/// in gemm_dot's lists that drops the pairs M = 129 with N = 2323 and N = 2323 with
/// K = 4096. It keeps the sweeps within CI's time.
inline constexpr index_t slow_sweep_max_volume = index_t{1} << 23;

/// Calls body(n, k, g, ms) for every weight shape of a kernel sweep that the packed layouts
/// accept (g a multiple of 32, or g ≥ K: one group per row), with the token counts of `ms`
/// whose m·n·k is at most `max_volume` (a weight with none is skipped), the shape captured
/// for failures. One weight, quantized and packed once, serves every m.
template <class Body>
void for_each_packable_shape(std::initializer_list<index_t> ms, std::initializer_list<index_t> ns,
                             std::initializer_list<index_t> ks, std::initializer_list<index_t> gs,
                             const Body& body,
                             index_t max_volume = std::numeric_limits<index_t>::max()) {
  for (const index_t n : ns)
    for (const index_t k : ks)
      for (const index_t g : gs) {
        CAPTURE(n, k, g);
        if (g % 32 != 0 && g < k) continue;
        std::vector<index_t> tokens;
        for (const index_t m : ms)
          if (m * n * k <= max_volume) tokens.push_back(m);
        if (!tokens.empty()) body(n, k, g, std::span<const index_t>(tokens));
      }
}

/// Gaussian operands of a fused-epilogue test: weight W (n×k), input X (m×k), adapter
/// factors B (n×r) and t (m×r), bias (1×n).
struct EpilogueOperands {
  Matrix w, x, b, t, bias;
};

/// EpilogueOperands drawn from `seed`.
inline EpilogueOperands epilogue_operands(std::uint32_t seed, index_t m, index_t n, index_t k,
                                          index_t r) {
  std::mt19937 rng(seed);
  EpilogueOperands o;
  o.w = gaussian(rng, n, k);
  o.x = gaussian(rng, m, k);
  o.b = gaussian(rng, n, r);
  o.t = gaussian(rng, m, r);
  o.bias = gaussian(rng, 1, n);
  return o;
}

/// Whether a and b have the same shape and the same bits.
inline bool bitwise_equal(const Matrix& a, const Matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

/// Checks |y − ref| ≤ gamma·magnitude + 1e-30 for every element, reporting the first one
/// outside with `what`: the shape of every FP32 error-bound check in the kernel tests.
inline void check_within_bound(const Matrix& y, const MatrixD& ref, const MatrixD& magnitude,
                               double gamma, const char* what) {
  for (index_t m = 0; m < y.rows(); ++m) {
    for (index_t n = 0; n < y.cols(); ++n) {
      const double err = std::abs(static_cast<double>(y(m, n)) - ref(m, n));
      if (!(err <= gamma * magnitude(m, n) + 1e-30)) {
        CAPTURE(m, n, y(m, n), ref(m, n), err, gamma * magnitude(m, n));
        FAIL_CHECK(what);
        return;
      }
    }
  }
}

}  // namespace qlr::test
