#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What a consumer's unit costs to compile: each probe in bench/compile_cost/ compiled with
# CMake's Release flags (-O3 -DNDEBUG), header-only and as a qlr::compiled unit
# (-DQLR_COMPILED), best of REPEAT (default 2) runs; wall and user seconds. Run it on a quiet
# machine. Usage: bench/compile_cost.sh [include-dir of the qlr to measure]
set -euo pipefail
cd "$(dirname "$0")/.."
include=${1:-include}
repeat=${REPEAT:-2}
for probe in bench/compile_cost/*.cpp; do
  for mode in header-only compiled; do
    flags=(-std=c++20 -O3 -DNDEBUG -I"$include" -isystem /usr/include/eigen3)
    [[ $mode == compiled ]] && flags+=(-DQLR_COMPILED)
    best=""
    for ((i = 0; i < repeat; ++i)); do
      t=$( { /usr/bin/time -f "%e %U" g++ "${flags[@]}" -c "$probe" -o /dev/null; } 2>&1 | tail -n1)
      if [[ -z $best ]] || awk -v a="${t%% *}" -v b="${best%% *}" 'BEGIN { exit !(a < b) }'; then
        best=$t
      fi
    done
    printf '%-32s %-12s wall %6s s  user %6s s\n' "$(basename "$probe")" "$mode" ${best}
  done
done
