#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Compiler launcher of the header checks: parses the unit with -fsyntax-only and leaves the
# empty object the build expects. A header is self-contained once it parses on its own; the
# code generation a full compile adds (and the template bodies GCC defers to the end of the
# unit) checks nothing more about its includes, and was a third of those units' time.
out=""
previous=""
for argument in "$@"; do
  [ "$previous" = "-o" ] && out="$argument"
  previous="$argument"
done
"$@" -fsyntax-only && : > "$out"
