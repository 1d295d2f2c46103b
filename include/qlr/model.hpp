// SPDX-License-Identifier: Apache-2.0
// Module header of what a language-model engine needs besides layers: llama2.c's tokenizer.
#pragma once

#include "qlr/model/tokenizer.hpp"
