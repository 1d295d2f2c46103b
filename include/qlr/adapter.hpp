// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's adapters: the Adapter concept, LoRA, DoRA, QA-LoRA, plain and
// quantized low-rank terms, and their merges (dense, into zero points, requantizing).
#pragma once

#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/lora_quant.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
