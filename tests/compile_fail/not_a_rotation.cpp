// SPDX-License-Identifier: Apache-2.0
// rotate_rows() with a policy that does not model RotationPolicy (its rotate() may throw)
// must fail to compile naming the concept.
#include "qlr/rotate/rotation.hpp"

struct NotARotation {
  [[nodiscard]] qlr::index_t size() const noexcept { return 8; }
  [[nodiscard]] qlr::index_t scratch_size() const noexcept { return 0; }
  void rotate(float*, float*) const {}  // not noexcept: an online rotation must not throw
  void unrotate(float*, float*) const noexcept {}
};

int main() {
  qlr::Matrix x = qlr::Matrix::Ones(2, 8);
#ifdef QLR_SHOULD_FAIL
  qlr::rotate::rotate_rows(NotARotation{}, x);
#else
  qlr::rotate::rotate_rows(qlr::rotate::Identity(8), x);
#endif
  return x(0, 0) == 1.0f ? 0 : 1;
}
