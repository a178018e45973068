#!/usr/bin/env bash
# Build gradclip._C with AddressSanitizer + UndefinedBehaviorSanitizer and run the whole test
# suite against that build. Exits non-zero if a test fails or if any sanitizer reports.
#
#   tools/sanitize.sh                      # whole suite
#   tools/sanitize.sh -k fuzz -x           # extra arguments go to pytest
#   GRADCLIP_STRESS=1 tools/sanitize.sh    # with the stress counts
#
# The build goes into its own virtualenv (default /tmp/gc-asan, or $GC_ASAN_VENV), built from
# a copy of the sources, so the project's .venv and its editable install are not touched.
# Python itself is not instrumented: libasan is preloaded, Python's allocator is switched to
# malloc (PYTHONMALLOC=malloc) so that ASan sees every object, and leak detection is off
# because CPython does not free everything at exit by design.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GC_ASAN_VENV:-/tmp/gc-asan}"
PYTHON="${PYTHON:-python3}"
LOGS="$VENV/sanitizer-logs"

log() { printf '\n== %s\n' "$*" >&2; }

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
log "installing test dependencies into $VENV"
# torch pinned exactly, always: an open requirement would pull a multi-GB CUDA build.
# mpi4py + MPICH: the distributed tests run too (they fail rather than skip under CI=true).
"$VENV/bin/python" -m pip install -q "setuptools>=68" wheel "numpy>=2.0" pytest hypothesis "torch==2.13.0" \
    "mpi4py==4.1.2" "mpich==5.0.2" "pytest-xdist==3.8.0"

log "building gradclip with GRADCLIP_SANITIZE=1"
SRC="$VENV/src"
rm -rf "$SRC"
mkdir -p "$SRC"
# Tracked files plus new, not-ignored ones (what a fresh clone, or the working tree, has).
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- csrc python setup.py pyproject.toml) |
    while IFS= read -r -d '' f; do [[ -f "$ROOT/$f" ]] && printf '%s\0' "$f"; done |
    tar -C "$ROOT" --null -T - -cf - | tar -xf - -C "$SRC"
touch "$SRC/README.md"  # pyproject names a readme; the build does not need its content
GRADCLIP_SANITIZE=1 "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall "$SRC"

LIBASAN="$(gcc -print-file-name=libasan.so)"
if [[ ! -e "$LIBASAN" ]]; then
    echo "libasan not found (gcc -print-file-name=libasan.so gave '$LIBASAN')" >&2
    exit 2
fi
# Located without importing it (that would load ASan without the preload).
SO="$("$VENV/bin/python" -c 'import glob, importlib.util as u; print(*glob.glob(u.find_spec("gradclip").submodule_search_locations[0] + "/_C*.so"))')"
if [[ "$(ldd "$SO")" != *libasan* ]]; then
    echo "$SO is not linked against libasan: GRADCLIP_SANITIZE had no effect" >&2
    exit 2
fi
log "sanitized extension: $SO"

rm -rf "$LOGS"
mkdir -p "$LOGS"
# libstdc++ right after libasan: otherwise ASan's __cxa_throw interceptor finds no real
# __cxa_throw and aborts ("CHECK failed: ... real___cxa_throw") the first time torch throws a
# C++ exception (e.g. for an empty tensor's inf norm), and torch-parity tests could not run.
LIBSTDCXX="$(readlink -f "$(gcc -print-file-name=libstdc++.so)")"
export LD_PRELOAD="$LIBASAN:$LIBSTDCXX${LD_PRELOAD:+:$LD_PRELOAD}"
export PYTHONMALLOC=malloc
# halt on the first report; reports also go to $LOGS, so one swallowed by a subprocess or a
# test harness still fails the run.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$LOGS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan"
export PYTHONFAULTHANDLER=1

log "running the test suite under ASan + UBSan"
set +e
(cd "$ROOT" && "$VENV/bin/python" -c 'import gradclip, sys; assert gradclip.__file__.startswith(sys.prefix), gradclip.__file__' \
    && "$VENV/bin/python" -m pytest -p no:cacheprovider -q tests "$@")
status=$?
set -e

reports=("$LOGS"/*)
if [[ -e "${reports[0]}" ]]; then
    echo "sanitizer reports:" >&2
    for r in "${reports[@]}"; do
        echo "---- $r" >&2
        cat "$r" >&2
    done
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "tests failed under the sanitizers (exit $status)" >&2
    exit "$status"
fi
log "clean: no ASan/UBSan report"
