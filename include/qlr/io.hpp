// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's file readers and writers: llama2.c checkpoints, safetensors
// files, PEFT LoRA/DoRA adapters.
#pragma once

#include "qlr/io/llama2c.hpp"
#include "qlr/io/peft.hpp"
#include "qlr/io/safetensors.hpp"
