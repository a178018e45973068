"""Typing: the C stub matches the extension, and the typed user script runs.

The static checks themselves (mypy --strict and pyright over the package and
tests/typing/user_script.py) run in CI (.ci/run); they need the checkers, which the test
requirements do not include.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gradclip
from gradclip import _C

STUB = Path(gradclip.__file__).with_name("_C.pyi")
USER_SCRIPT = Path(__file__).parent / "typing" / "user_script.py"


def stub_entries():
    """{name: [positional parameter names]} for functions, {name: annotation} for values."""
    tree = ast.parse(STUB.read_text())
    functions, values = {}, {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert not node.args.args and not node.args.kwonlyargs and not node.args.vararg, (
                f"{node.name}: C entry points are positional-only (add '/')")
            functions[node.name] = [a.arg for a in node.args.posonlyargs]
        elif isinstance(node, ast.AnnAssign):
            values[node.target.id] = ast.unparse(node.annotation)
    return functions, values


def module_entries():
    functions, values = {}, {}
    for name in dir(_C):
        if name.startswith("__"):
            continue
        obj = getattr(_C, name)
        if callable(obj):
            # Each docstring starts with the call: "name(a, b, c)".
            match = re.match(rf"{name}\(([^)]*)\)", obj.__doc__ or "")
            assert match, f"_C.{name}'s docstring does not start with its signature"
            functions[name] = [a.strip() for a in match.group(1).split(",") if a.strip()]
        else:
            values[name] = type(obj).__name__
    return functions, values


def test_stub_names_match_the_extension():
    stub_functions, stub_values = stub_entries()
    functions, values = module_entries()
    assert sorted(stub_functions) == sorted(functions)
    assert stub_values == values  # e.g. ISA: str, BLOCK: int


def test_stub_parameters_match_the_docstrings():
    stub_functions, _ = stub_entries()
    functions, _ = module_entries()
    for name, params in functions.items():
        assert stub_functions[name] == params, name


@pytest.mark.parametrize("name", sorted(module_entries()[0]))
def test_stub_arity_is_what_the_extension_checks(name):
    n = len(stub_entries()[0][name])
    function = getattr(_C, name)
    for wrong in (n - 1, n + 1):
        if wrong < 0:
            continue
        # A wrong count is refused before any argument is looked at.
        with pytest.raises(TypeError, match=r"takes (exactly|no) |argument"):
            function(*[object()] * wrong)


def test_user_script_runs():
    done = subprocess.run([sys.executable, str(USER_SCRIPT)], capture_output=True, text=True,
                          check=True)
    assert done.stdout.startswith("ok ")
