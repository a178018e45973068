#!/usr/bin/env bash
# Run a small subset of the tests under valgrind's memcheck and fail on any error, or any
# definite leak, whose stack goes through gradclip._C.
#
#   tools/valgrind.sh                       # the default subset (a few minutes)
#   tools/valgrind.sh tests/test_fuzz_c.py  # other pytest arguments replace the subset
#
# Uses the project's interpreter (.venv, or $PYTHON) and whatever gradclip it imports.
# PYTHONMALLOC=malloc lets memcheck see every Python object; tools/valgrind-python.supp
# silences CPython 3.11's and the loader's own noise. Since the interpreter and NumPy report
# errors of their own that have nothing to do with gradclip, the verdict is taken from the
# log: an error record counts only if one of its frames is in gradclip's extension.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
LOGS="${GC_VALGRIND_LOGS:-$(mktemp -d /tmp/gc-valgrind.XXXXXX)}"
mkdir -p "$LOGS"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }

if [[ $# -eq 0 ]]; then
    # torch is left out (minutes to import under valgrind, and not gradclip's code); timing
    # tests are left out (valgrind runs one thread at a time), and so is the one that needs
    # floating-point exception flags (valgrind does not emulate them).
    set -- tests/test_hostile_inputs.py tests/test_fuzz_c.py tests/test_leaks.py tests/test_threads.py \
        -k "not torch and not gil and not memory_flat and not leak_detectors and not cast_error"
fi

export PYTHONMALLOC=malloc
export GRADCLIP_FUZZ_EXAMPLES="${GRADCLIP_FUZZ_EXAMPLES:-15}"
export GRADCLIP_LEAK_CALLS="${GRADCLIP_LEAK_CALLS:-30}"
export GRADCLIP_THREAD_ROUNDS="${GRADCLIP_THREAD_ROUNDS:-2}"

echo "valgrind logs in $LOGS" >&2
set +e
(cd "$ROOT" && valgrind --tool=memcheck --trace-children=no \
    --suppressions="$ROOT/tools/valgrind-python.supp" \
    --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --num-callers=50 --log-file="$LOGS/memcheck.%p.log" \
    "$PYTHON" -m pytest -p no:cacheprovider -q "$@")
status=$?
set -e

set +e
"$PYTHON" - "$LOGS" <<'EOF'
import glob, re, sys

# A frame in the extension: its file (no debug info) or one of its sources (with -g).
ours = re.compile(r"gradclip/_C\.cpython|\((module\.c|gc_[a-z0-9_]+\.[ch]):")
bad, total = [], 0
logs = sorted(glob.glob(sys.argv[1] + "/memcheck.*.log"))
if not logs:
    sys.exit("valgrind wrote no log: did it run?")
for path in logs:
    record = []
    for line in open(path, errors="replace").read().splitlines() + ["==0== "]:
        body = re.sub(r"^==\d+== ?", "", line)
        if body.strip():
            record.append(body)
            continue
        if record and (record[0].startswith(("Invalid", "Conditional", "Use of", "Syscall", "Mismatched", "Source and destination"))
                       or "definitely lost" in record[0]):
            total += 1
            if any(ours.search(frame) for frame in record[1:]):
                bad.append((path, "\n".join(record)))
        record = []
print(f"valgrind: {total} error/leak records outside suppressions, {len(bad)} in gradclip", file=sys.stderr)
for path, text in bad:
    print(f"---- {path}\n{text}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
verdict=$?
set -e
if [[ $status -ne 0 ]]; then
    echo "the tests failed under valgrind (pytest exit $status)" >&2
    exit "$status"
fi
exit "$verdict"
