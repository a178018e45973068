"""Shared pytest configuration.

Under CI (CI=true) a skipped torch-parity test (any test in a module that imports torch)
fails the run: parity must be checked there, never skipped silently.
"""

import os

import pytest

_skipped_torch_tests = []


def pytest_collection_modifyitems(config, items):
    # Every test of a module that imports torch compares against it: mark it as such.
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and "torch" in vars(module):
            item.add_marker(pytest.mark.torch)


def pytest_runtest_logreport(report):
    if report.skipped and "torch" in report.keywords:
        _skipped_torch_tests.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") == "true" and _skipped_torch_tests:
        print(f"\n{len(_skipped_torch_tests)} torch-parity test(s) were skipped under CI:")
        for nodeid in _skipped_torch_tests[:20]:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
