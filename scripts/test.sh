#!/usr/bin/env bash
# The whole suite: compile, then every test file under test/ with Node's test runner (shellcheck of
# the scripts is one of them: test/hosts/shellcheck.test.ts).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
mapfile -t files < <(find test -name '*.test.ts' | sort)
if [ "$#" -gt 0 ]; then files=("$@"); fi
# The timeout bounds each file as a whole too: test/images/vm.test.ts builds an image and boots
# VMs under software emulation, which takes longer than 10 minutes when the machine is busy. Each
# test inside a file keeps its own, shorter bound.
exec node --import tsx --test --test-concurrency=2 --test-timeout=1800000 "${files[@]}"
