"""The error hierarchy: pickling with details, stable unique codes, builtin inheritance."""

from __future__ import annotations

import copy
import inspect
import pickle
import re

import pytest

from dspex import errors

ERROR_CLASSES: list[type[errors.DspexError]] = sorted(
    (
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, errors.DspexError)
    ),
    key=lambda cls: cls.__name__,
)

# Codes travel on the wire and are matched by clients: once published they never change.
STABLE_CODES = {
    "AccessError": "access_error",
    "BatchUpdateError": "batch_failed",
    "BindingError": "binding_error",
    "ConstraintError": "invalid_constraint",
    "CycleError": "dependency_cycle",
    "DspexError": "dspex_error",
    "LimitExceededError": "limit_exceeded",
    "LockedError": "locked",
    "PatternError": "invalid_pattern",
    "PermissionDeniedError": "permission_denied",
    "SessionClosedError": "session_closed",
    "SessionError": "session_error",
    "SessionExistsError": "session_exists",
    "SessionExpiredError": "session_expired",
    "SessionNotFoundError": "session_not_found",
    "StoreError": "store_error",
    "StoreProtocolError": "store_protocol",
    "StoreUnavailableError": "store_unavailable",
    "ToolArgumentsError": "tool_arguments",
    "ToolError": "tool_error",
    "ToolExistsError": "tool_exists",
    "ToolNotFoundError": "tool_not_found",
    "ToolTimeoutError": "tool_timeout",
    "ToolUnavailableError": "tool_unavailable",
    "UnauthenticatedError": "unauthenticated",
    "VariableError": "variable_error",
    "VariableExistsError": "variable_exists",
    "VariableNotFoundError": "variable_not_found",
    "VariableTypeError": "invalid_type",
    "VariableValueError": "invalid_value",
    "VersionConflictError": "version_conflict",
    "VersionNotFoundError": "version_not_found",
    "WatchError": "watch_error",
    "WatchLaggedError": "watch_lagged",
    "WorkerCrashedError": "worker_crashed",
    "WorkerError": "worker_error",
    "WorkerTimeoutError": "worker_timeout",
}

BUILTIN_BASES = {
    "SessionNotFoundError": LookupError,
    "VariableNotFoundError": LookupError,
    "VersionNotFoundError": LookupError,
    "VariableValueError": ValueError,
    "VariableTypeError": TypeError,
    "ConstraintError": ValueError,
    "PatternError": ValueError,
    "CycleError": ValueError,
    "BindingError": TypeError,
    "StoreUnavailableError": ConnectionError,
    "WorkerTimeoutError": TimeoutError,
    "ToolNotFoundError": LookupError,
    "ToolArgumentsError": ValueError,
    "ToolTimeoutError": TimeoutError,
}


def test_error_classes_are_discovered() -> None:
    assert len(ERROR_CLASSES) >= len(STABLE_CODES)
    assert {cls.__name__ for cls in ERROR_CLASSES} >= set(STABLE_CODES)


@pytest.mark.parametrize("name", sorted(STABLE_CODES))
def test_code_is_stable(name: str) -> None:
    assert getattr(errors, name).code == STABLE_CODES[name]


def test_codes_are_unique_snake_case_and_resolvable() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes)), "two error classes share a code"
    for cls in ERROR_CLASSES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls
        assert "code" in vars(cls), f"{cls.__name__} must declare its own code"
        assert errors.error_class_for_code(cls.code) is cls


def test_error_class_for_unknown_code_is_none() -> None:
    assert errors.error_class_for_code("no_such_code") is None


def test_every_error_class_is_exported_and_drawn_in_the_tree() -> None:
    for cls in ERROR_CLASSES:
        assert cls.__name__ in errors.__all__
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the tree"
    assert errors.__all__ == sorted(errors.__all__)


@pytest.mark.parametrize("name", sorted(BUILTIN_BASES))
def test_builtin_inheritance_as_documented(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, BUILTIN_BASES[name])
    assert issubclass(cls, errors.DspexError)
    assert not issubclass(cls, KeyError), "LookupError, never KeyError (it quotes messages)"


def test_only_documented_classes_inherit_builtins() -> None:
    builtins_seen = (LookupError, ValueError, TypeError, ConnectionError, TimeoutError)
    for cls in ERROR_CLASSES:
        inherited = [base for base in builtins_seen if issubclass(cls, base)]
        if cls.__name__ in BUILTIN_BASES:
            assert BUILTIN_BASES[cls.__name__] in inherited
        elif cls.__name__ in STABLE_CODES:
            # VariableTypeError is also a ValueError through VariableValueError.
            assert inherited == [], f"{cls.__name__} inherits {inherited} undocumented"


def test_hierarchy_families() -> None:
    assert issubclass(errors.VariableTypeError, errors.VariableValueError)
    assert issubclass(errors.PatternError, errors.ConstraintError)
    assert issubclass(errors.WatchLaggedError, errors.WatchError)
    for name in ("SessionNotFoundError", "SessionClosedError", "SessionExpiredError"):
        assert issubclass(getattr(errors, name), errors.SessionError)
    for name in ("StoreUnavailableError", "StoreProtocolError"):
        assert issubclass(getattr(errors, name), errors.StoreError)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_details(cls: type[errors.DspexError]) -> None:
    error = cls(
        "variable 'temperature': value 3.5 breaks rule max=2.0",
        name="temperature",
        session_id="abc",
        version=3,
        resume_from=41,
    )
    for copied in (
        pickle.loads(pickle.dumps(error)),
        copy.copy(error),
        copy.deepcopy(error),
    ):
        assert type(copied) is cls
        assert str(copied) == str(error)
        assert copied.message == error.message
        assert copied.details == error.details
        assert copied.name == "temperature"
        assert copied.resume_from == 41
        assert copied.code == cls.code


def test_details_are_attributes_and_missing_ones_raise_attribute_error() -> None:
    error = errors.VariableNotFoundError("no variable 'x'", name="x")
    assert error.name == "x"
    assert error.details == {"name": "x"}
    assert str(error) == "no variable 'x'"
    assert error.args == ("no variable 'x'",)
    with pytest.raises(AttributeError):
        _ = error.session_id
    assert not hasattr(error, "version")


def test_nested_error_details_pickle() -> None:
    inner = errors.VariableValueError("bad", name="a")
    outer = errors.BatchUpdateError("batch failed", results={"a": inner, "b": None})
    copied = pickle.loads(pickle.dumps(outer))
    assert type(copied.results["a"]) is errors.VariableValueError
    assert copied.results["a"].name == "a"


def test_cause_is_kept_when_raised_from() -> None:
    with pytest.raises(errors.StoreUnavailableError) as caught:
        try:
            raise OSError("connection refused")
        except OSError as exc:
            raise errors.StoreUnavailableError("store at grpc://x:1 is down") from exc
    assert isinstance(caught.value.__cause__, OSError)
