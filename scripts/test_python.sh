#!/usr/bin/env bash
# The Python package's tests (docs/python.md): builds the wheel with `pip wheel .`, installs it
# into a fresh venv, and runs python/tests with pytest against the installed package and its
# `detrc` command. Called by scripts/test.sh after `cargo test` (which builds target/debug/detrc,
# the binary the installed command is compared with). Extra arguments go to pytest.
#
# Needs LIBCLANG_PATH (scripts/install_build_deps.sh) for the build; the TensorRT-RTX tests run
# when DETRC_TENSORRT_DIR is set and fail when DETRC_REQUIRE_TENSORRT=1 but it is not.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# setup_python.sh's venv has pip for certain (a system python3 may not).
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
out=target/python
rm -rf "$out/wheel" "$out/venv"
mkdir -p "$out"

# The dev profile: `cargo test` has built its dependencies already (opt-level 2, see
# Cargo.toml), so this compiles only PyO3 and the extension. A release wheel (what `pip install
# .` makes) would rebuild everything optimised: many minutes on a small CI machine.
# --locked: the same dependency versions as the cargo build.
echo "test_python: building the wheel (pip wheel .)" >&2
MATURIN_PEP517_ARGS="${MATURIN_PEP517_ARGS:---profile dev --locked}" \
    "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out/wheel" .
wheels=("$out"/wheel/detrc-*-abi3-*.whl)
[ -f "${wheels[0]}" ] || { echo "test_python: no abi3 wheel in $out/wheel" >&2; exit 1; }

echo "test_python: installing ${wheels[0]##*/} into a fresh venv" >&2
"$PY" -m venv "$out/venv"
"$out/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "${wheels[0]}" -r python/tests/requirements.txt

# The cargo-built binary the installed command is compared with.
if [ -z "${DETRC_CARGO_BIN:-}" ] && [ -x target/debug/detrc ]; then
    export DETRC_CARGO_BIN="$root/target/debug/detrc"
fi
# From a folder without a `detrc` package, so `import detrc` is the installed one. pytest exits
# 5 when it collects no test: that fails this script like any other non-zero status.
cd "$out"
"$root/$out/venv/bin/python" -m pytest "$root/python/tests" -p no:cacheprovider -ra "$@"
