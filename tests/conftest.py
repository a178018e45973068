"""Shared pytest configuration.

Under CI (CI=true) a skipped torch-parity test (any test in a module that imports torch)
fails the run: parity must be checked there, never skipped silently.

The one exception is explicit: GRADCLIP_TEST_WITHOUT_TORCH=<reason> (CI's runs on the Pythons
for which no torch 2.13 CPU wheel is at hand) leaves out every test module that imports torch,
and says so in the report header and at the end.
"""

import inspect
import os
import re
from pathlib import Path

import pytest

WITHOUT_TORCH = os.environ.get("GRADCLIP_TEST_WITHOUT_TORCH", "")


def _modules_needing_torch():
    """Test modules that import torch, directly or through another test module they import."""
    texts = {path.stem: path.read_text(encoding="utf-8") for path in Path(__file__).parent.glob("*.py")}
    needing = {name for name, text in texts.items() if re.search(r"^import torch\b", text, re.M)}
    while True:
        more = {name for name, text in texts.items() if name not in needing
                and any(re.search(rf"^from {other} import", text, re.M) for other in needing)}
        if not more:
            return needing
        needing |= more


collect_ignore = []
if WITHOUT_TORCH:
    collect_ignore = sorted(f"{name}.py" for name in _modules_needing_torch() if name.startswith("test_"))


def pytest_report_header(config):
    if WITHOUT_TORCH:
        return (f"GRADCLIP_TEST_WITHOUT_TORCH={WITHOUT_TORCH!r}: not collected (they import "
                f"torch): {', '.join(collect_ignore)}")
    return None

_skipped_torch_tests = []


def _imports_torch_inside(item):
    function = getattr(item, "function", None)
    try:
        return function is not None and re.search(r"^\s+import torch\b", inspect.getsource(function), re.M)
    except (OSError, TypeError):
        return False


_deselected_torch_tests = []


def pytest_collection_modifyitems(config, items):
    # Every test of a module that imports torch compares against it: mark it as such; so is a
    # test that imports torch in its body (without torch: left out, and counted at the end).
    keep = []
    for item in items:
        module = getattr(item, "module", None)
        inside = _imports_torch_inside(item)
        if WITHOUT_TORCH and inside:
            _deselected_torch_tests.append(item)
            continue
        if (module is not None and "torch" in vars(module)) or inside:
            item.add_marker(pytest.mark.torch)
        keep.append(item)
    if _deselected_torch_tests:
        config.hook.pytest_deselected(items=_deselected_torch_tests)
        items[:] = keep


def pytest_runtest_logreport(report):
    if report.skipped and "torch" in report.keywords:
        _skipped_torch_tests.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if WITHOUT_TORCH:
        print(f"\nGRADCLIP_TEST_WITHOUT_TORCH: {len(collect_ignore)} torch test module(s) left out "
              f"({WITHOUT_TORCH}), {len(_deselected_torch_tests)} test(s) that import torch in their "
              f"body deselected; {len(_skipped_torch_tests)} torch test(s) skipped")
        return
    if os.environ.get("CI") == "true" and _skipped_torch_tests:
        print(f"\n{len(_skipped_torch_tests)} torch-parity test(s) were skipped under CI:")
        for nodeid in _skipped_torch_tests[:20]:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED



@pytest.fixture(autouse=True)
def _no_scratch_block_left_in_use():
    """Every C call gives its scratch blocks back (csrc/gc_scratch.c), on success and on every
    error path: after each test of the suite, none is still handed out."""
    yield
    from gradclip import _C

    in_use, _ = _C._scratch()
    assert in_use == 0, f"{in_use} scratch block(s) still in use after the test"
