// SPDX-License-Identifier: Apache-2.0
// A QA-LoRA adapter folds into zero points, so merging it into a base without them (NF4's
// codebook) must fail to compile naming the AdapterFor concept and its nested rule.
#include "qlr/adapter/merge.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"

int main() {
  const qlr::Matrix w = qlr::Matrix::Ones(2, 64);
  const qlr::adapter::QaLora qa(qlr::Matrix::Ones(1, 2), qlr::Matrix::Zero(2, 1), 1.0, 64, 32);
#ifdef QLR_SHOULD_FAIL
  const auto base = qlr::quant::Nf4({.block_size = 32}).quantize(w);
#else
  const auto base = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w);
#endif
  const auto merged = qlr::adapter::merge_into_zeros(base, qa);
  return merged.rows() == 2 ? 0 : 1;
}
