// SPDX-License-Identifier: Apache-2.0
// Module header of qlr's file readers: llama2.c checkpoints.
#pragma once

#include "qlr/io/llama2c.hpp"
