"""The public surface: ``dspex.__all__`` is exactly the sorted public names, and they resolve."""

from __future__ import annotations

import importlib
import types

import pytest

import dspex

# DESIGN section 2 fixes these names; later capabilities add more (Program, bind, tool).
FIXED_NAMES = {
    "Choice",
    "DspexError",
    "LocalProvider",
    "Remote",
    "Session",
    "SessionContext",
    "StateProvider",
    "Variable",
    "VariableRecord",
    "VariableUpdate",
    "VariableWatch",
    "current_session",
    "errors",
    "tool",
}


def public_names(module: types.ModuleType) -> set[str]:
    """Public attributes that are not submodules picked up by importing them."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name == "annotations":
            continue
        if isinstance(value, types.ModuleType) and name not in module.__all__:
            continue  # e.g. dspex.session, bound as an attribute by the import system
        names.add(name)
    return names


def test_all_is_sorted_and_unique() -> None:
    assert dspex.__all__ == sorted(set(dspex.__all__))


def test_all_equals_the_public_names() -> None:
    loaded = public_names(dspex)
    assert loaded <= set(dspex.__all__), (
        f"public but not in __all__: {loaded - set(dspex.__all__)}"
    )
    for name in dspex.__all__:
        assert getattr(dspex, name) is not None
    assert public_names(dspex) == set(dspex.__all__)


def test_fixed_design_names_are_exported() -> None:
    assert set(dspex.__all__) >= FIXED_NAMES


def test_version_is_a_string() -> None:
    assert isinstance(dspex.__version__, str)
    assert dspex.__version__.count(".") >= 1


@pytest.mark.parametrize(
    "module_name",
    [
        "dspex.errors",
        "dspex._model",
        "dspex.session",
        "dspex.variables",
        "dspex.state",
        "dspex.state.core.semantics",
        "dspex.state.core.contract",
        "dspex.state.core.watch",
        "dspex.state.core.context",
        "dspex.bench._local",
        "dspex.cli._bench",
        "dspex.cli._demo",
        "dspex.demo",
        "dspex.remote",
        "dspex.tools",
    ],
)
def test_foundation_modules_declare_all_and_it_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert isinstance(module.__all__, list)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name!r}"
    assert module.__doc__, f"{module_name} needs a module docstring naming its layer and job"


def test_state_package_all_is_sorted_and_resolves() -> None:
    import dspex.state

    assert dspex.state.__all__ == sorted(dspex.state.__all__)
    for name in dspex.state.__all__:
        assert getattr(dspex.state, name) is not None
