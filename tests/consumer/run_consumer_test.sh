#!/usr/bin/env bash
# Installs an lstash build tree into a temporary prefix and checks that a
# downstream project can find_package(lstash), build against it and run.
#
#   run_consumer_test.sh BUILD_DIR [CMAKE_COMMAND]
set -euo pipefail

fail() { echo "consumer test: FAIL: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || fail "usage: $0 BUILD_DIR [CMAKE_COMMAND]"
build_dir=$(cd "$1" && pwd) || fail "no build directory '$1'"
cmake_cmd=${2:-cmake}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lstash-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

echo "== install $build_dir -> $prefix"
"$cmake_cmd" --install "$build_dir" --prefix "$prefix" >"$tmp/install.log" 2>&1 || {
  cat "$tmp/install.log" >&2
  fail "cmake --install failed (is the lstash shared library built?)"
}

# The installed public headers must not drag private dependencies into
# users' builds.
include_dir="$prefix/include/lstash"
[[ -f $include_dir/store.h && -f $include_dir/status.h && -f $include_dir/export.h ]] \
  || fail "public headers missing under $include_dir"
if grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"][^>"]*(zmq|rocksdb/|cereal/|cuda)' \
     "$prefix/include"; then
  fail "installed headers include zmq/rocksdb/cereal/cuda headers (listed above)"
fi

# Use the same C++ compiler as the build tree, when it says which.
compiler_args=()
cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt" 2>/dev/null | head -n 1)
[[ -n $cxx ]] && compiler_args=("-DCMAKE_CXX_COMPILER=$cxx")

echo "== configure + build the consumer project"
"$cmake_cmd" -S "$here/project" -B "$tmp/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
  "${compiler_args[@]}" || fail "configuring the consumer project failed"
"$cmake_cmd" --build "$tmp/build" || fail "building the consumer project failed"

lib=$(find "$prefix" -name 'liblstash.so*' -print -quit)
[[ -n $lib ]] || fail "no liblstash.so under $prefix"
libdir=$(dirname "$lib")

echo "== run"
exe="$tmp/build/lstash_consumer"
if command -v ldd >/dev/null; then
  resolved=$(LD_LIBRARY_PATH="$libdir" ldd "$exe" | grep 'liblstash\.so' || true)
  [[ $resolved == *"$prefix"* ]] || fail "lstash_consumer does not load the installed liblstash: ${resolved:-not linked}"
fi
set +e
out=$(LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$exe" 2>&1)
rc=$?
set -e
printf '%s\n' "$out"
[[ $rc -eq 0 ]] || fail "lstash_consumer exited with status $rc"
[[ $out == *"consumer ok"* ]] || fail "lstash_consumer did not print 'consumer ok'"
echo "consumer test: PASS"
