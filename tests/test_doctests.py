"""The examples in gradclip's docstrings and in docs/examples.rst run and print what they say."""

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import gradclip

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples.rst"
NEEDS_TORCH = {"gradclip.optim._torch_state"}


def modules():
    names = ["gradclip"]
    for info in pkgutil.walk_packages(gradclip.__path__, "gradclip."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def run(test):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test)
    return runner.summarize(verbose=False)


def test_every_public_example_is_found():
    found = sum(len(t.examples) for name in modules()
                for t in doctest.DocTestFinder().find(importlib.import_module(name)))
    assert found >= 15  # clip_grad_norm_, the converter, state_dict_to_torch, ...


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    if name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
        pytest.skip("the example uses torch, which this run does not have")
    module = importlib.import_module(name)
    for test in doctest.DocTestFinder().find(module):
        result = run(test)
        assert result.failed == 0, f"{test.name}: {result.failed} example(s) failed"


def test_docs_examples_page():
    if not EXAMPLES.exists():
        pytest.skip("docs/ is not beside the tests (an installed copy of the tests)")
    text = EXAMPLES.read_text(encoding="utf-8")
    test = doctest.DocTestParser().get_doctest(text, {}, "examples.rst", str(EXAMPLES), 0)
    assert len(test.examples) >= 8
    result = run(test)
    assert result.failed == 0
