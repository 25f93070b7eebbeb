"""The whole dspex exception hierarchy: the only exception types that leave the library.

```
DspexError
├── SessionError
│   ├── SessionNotFoundError      (also LookupError)
│   ├── SessionClosedError
│   ├── SessionExpiredError
│   └── SessionExistsError                             (snakepit compat) id already taken
├── VariableError
│   ├── VariableNotFoundError     (also LookupError)
│   ├── VersionNotFoundError      (also LookupError)   rollback/history target not kept
│   ├── VariableExistsError                            same name registered with another spec
│   ├── VariableAssignmentError   (also AttributeError)   a declared variable set on an instance
│   ├── VariableValueError        (also ValueError)    value breaks the declared constraints
│   │   └── VariableTypeError     (also TypeError)     value has the wrong type
│   ├── ConstraintError           (also ValueError)    the constraint spec itself is invalid
│   │   └── PatternError                               the regex pattern does not compile
│   ├── VersionConflictError                           expected_version did not match
│   ├── BatchUpdateError                               some names of a batch failed
│   ├── LockedError                                    another optimizer holds the variable
│   └── CycleError                (also ValueError)    a dependency edge would close a cycle
├── WatchError
│   └── WatchLaggedError                               watcher fell behind; resume from revision
├── AccessError
│   ├── UnauthenticatedError                           no or unknown credentials
│   └── PermissionDeniedError                          principal lacks the permission
├── LimitExceededError                                 a configured store limit was reached
├── StoreError
│   ├── StoreUnavailableError     (also ConnectionError)   store cannot be reached
│   ├── StoreProtocolError                              unknown status, version skew
│   └── StoreDataError                                  data dir unwritable/full/locked/newer
├── BindingError                  (also TypeError)      a variable bound to the wrong DSPy hook
├── TuningError                   (also ValueError)     a search space or tuning setup refused
├── ToolError                                           a tool raised; carries its traceback
│   ├── ToolNotFoundError         (also LookupError)   no such tool in the session
│   ├── ToolExistsError                                another connected process owns the name
│   ├── ToolArgumentsError        (also ValueError)    arguments refused before the tool ran
│   ├── ToolUnavailableError                           the owning process is not connected
│   └── ToolTimeoutError          (also TimeoutError)  the owner did not answer in time
└── WorkerError
    ├── WorkerCrashedError
    ├── WorkerSetupError                               target unpicklable or worker setup failed
    └── WorkerTimeoutError        (also TimeoutError)
```

Every class has a stable ``code`` string (used on the wire) and pickles with its details, so
errors cross process boundaries unchanged. Messages say what was wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

__all__ = [
    "AccessError",
    "BatchUpdateError",
    "BindingError",
    "ConstraintError",
    "CycleError",
    "DspexError",
    "LimitExceededError",
    "LockedError",
    "PatternError",
    "PermissionDeniedError",
    "SessionClosedError",
    "SessionError",
    "SessionExistsError",
    "SessionExpiredError",
    "SessionNotFoundError",
    "StoreDataError",
    "StoreError",
    "StoreProtocolError",
    "StoreUnavailableError",
    "ToolArgumentsError",
    "ToolError",
    "ToolExistsError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "ToolUnavailableError",
    "TuningError",
    "UnauthenticatedError",
    "VariableAssignmentError",
    "VariableError",
    "VariableExistsError",
    "VariableNotFoundError",
    "VariableTypeError",
    "VariableValueError",
    "VersionConflictError",
    "VersionNotFoundError",
    "WatchError",
    "WatchLaggedError",
    "WorkerCrashedError",
    "WorkerError",
    "WorkerSetupError",
    "WorkerTimeoutError",
    "error_class_for_code",
]


def _rebuild(cls: type[DspexError], message: str, details: dict[str, Any]) -> DspexError:
    return cls(message, **details)


class DspexError(Exception):
    """Base of every dspex error.

    Args:
        message: the human-readable explanation (what, where, what to do).
        **details: structured context for programs (``session_id``, ``name``, ``version`` ...),
            available as attributes and in ``details``.
    """

    code: ClassVar[str] = "dspex_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __getattr__(self, item: str) -> Any:
        details = self.__dict__.get("details", {})
        if item in details:
            return details[item]
        raise AttributeError(item)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))

    def __str__(self) -> str:
        return self.message


class SessionError(DspexError):
    """A problem with the session itself (absent, closed, expired, or none active)."""

    code = "session_error"


class SessionNotFoundError(SessionError, LookupError):
    """No session with this id exists in the store."""

    code = "session_not_found"


class SessionClosedError(SessionError):
    """The session was closed; open a new one."""

    code = "session_closed"


class SessionExpiredError(SessionError):
    """The session missed its heartbeats for longer than its TTL and was removed."""

    code = "session_expired"


class SessionExistsError(SessionError):
    """The session id is taken: the original bridge's InitializeSession refuses existing ids.

    dspex's own CreateSession joins an existing session instead; only ``--snakepit-compat``
    raises this.
    """

    code = "session_exists"


class VariableError(DspexError):
    """A problem with a variable or a write to it."""

    code = "variable_error"


class VariableNotFoundError(VariableError, LookupError):
    """No variable with this name is registered in the session."""

    code = "variable_not_found"


class VersionNotFoundError(VariableError, LookupError):
    """The requested version is not (or no longer) kept in the variable's history."""

    code = "version_not_found"


class VariableExistsError(VariableError):
    """The name is already registered with a different spec."""

    code = "variable_exists"


class VariableAssignmentError(VariableError, AttributeError):
    """A declared variable was assigned (or deleted) on a program instance.

    Its value lives in the session, shared by every program there: set it with
    ``session.set(name, value)``.
    """

    code = "variable_assignment"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        # AttributeError's own `name` slot would hide the detail: keep the variable name there.
        self.name = details.get("name")


class VariableValueError(VariableError, ValueError):
    """The value breaks the variable's declared constraints; nothing was changed."""

    code = "invalid_value"


class VariableTypeError(VariableValueError, TypeError):
    """The value has the wrong type for the variable; nothing was changed."""

    code = "invalid_type"


class ConstraintError(VariableError, ValueError):
    """The constraint spec itself is invalid (unknown key, min > max, ...)."""

    code = "invalid_constraint"


class PatternError(ConstraintError):
    """The ``pattern`` constraint is not a valid regular expression."""

    code = "invalid_pattern"


class VersionConflictError(VariableError):
    """``expected_version`` did not match the stored version (optimistic concurrency)."""

    code = "version_conflict"


class BatchUpdateError(VariableError):
    """Some names of a batch update failed; ``results`` maps each name to record or error."""

    code = "batch_failed"


class LockedError(VariableError):
    """Another optimizer holds the optimization lock on the variable."""

    code = "locked"


class CycleError(VariableError, ValueError):
    """A dependency edge would close a cycle; the edge was refused."""

    code = "dependency_cycle"


class WatchError(DspexError):
    """A watch ended abnormally."""

    code = "watch_error"


class WatchLaggedError(WatchError):
    """The watcher fell behind its bounded queue; resume from ``resume_from`` revision."""

    code = "watch_lagged"


class AccessError(DspexError):
    """Access control refused the call; nothing was changed."""

    code = "access_error"


class UnauthenticatedError(AccessError):
    """The call carried no valid credentials."""

    code = "unauthenticated"


class PermissionDeniedError(AccessError):
    """The principal lacks the permission for this session or variable."""

    code = "permission_denied"


class LimitExceededError(DspexError):
    """A configured limit (sessions, variables, value size, watchers ...) was reached."""

    code = "limit_exceeded"


class StoreError(DspexError):
    """The session store could not be used."""

    code = "store_error"


class StoreUnavailableError(StoreError, ConnectionError):
    """The session store cannot be reached (down, wrong address, timed out)."""

    code = "store_unavailable"

    @classmethod
    def stream_timeout(cls, address: str, what: str, timeout: float) -> StoreUnavailableError:
        """The error for a stream the store at ``address`` did not ``what`` within ``timeout``."""
        return cls(f"session store {address} did not {what} within {timeout:g} s", address=address)

    @classmethod
    def client_closed(cls, address: str, when: str = "") -> StoreUnavailableError:
        """The error for a call or stream that this process's own ``close()`` of its client
        ended or refused (``closed``): not the store's fault, and a later call connects again."""
        return cls(
            f"the client of session store {address} was closed{when}; a later call connects again",
            address=address,
            closed=True,
        )


class StoreProtocolError(StoreError):
    """The store answered with something this client does not understand."""

    code = "store_protocol"


class StoreDataError(StoreError):
    """The store's data cannot be used: unwritable, full, locked by another server, or newer.

    Nothing was changed: the write that met the problem was not applied.
    """

    code = "store_data"


class BindingError(DspexError, TypeError):
    """A variable was bound to a DSPy hook that does not exist or does not fit its type."""

    code = "binding_error"


class ToolError(DspexError):
    """A tool raised; ``remote_traceback`` carries the traceback text from its owner.

    ``error_type`` names the exception class the tool raised, ``tool`` and ``owner`` say which
    tool of which process.
    """

    code = "tool_error"


class ToolNotFoundError(ToolError, LookupError):
    """No tool with this name is registered in the session; the message lists the known ones."""

    code = "tool_not_found"

    @classmethod
    def in_session(cls, name: str, session_id: str, known: Iterable[str]) -> ToolNotFoundError:
        """The error for ``name`` missing from session ``session_id``; it lists ``known``."""
        names = sorted(known)
        listed = ", ".join(names) or "none"
        return cls(
            f"no tool named {name!r} in session {session_id!r}; known tools: {listed}",
            tool=name,
            known=names,
        )


class ToolExistsError(ToolError):
    """Another process, still connected, registered a tool with this name in the session."""

    code = "tool_exists"


class ToolArgumentsError(ToolError, ValueError):
    """The arguments do not fit the tool's parameters; the tool did not run."""

    code = "tool_arguments"


class ToolUnavailableError(ToolError):
    """The process that owns the tool is not connected (it ended, or lost its connection)."""

    code = "tool_unavailable"


class ToolTimeoutError(ToolError, TimeoutError):
    """The tool's owner did not answer within the call's timeout."""

    code = "tool_timeout"


class TuningError(DspexError, ValueError):
    """A tuning run was refused before it started (search space, study, arguments)."""

    code = "tuning_error"


class WorkerError(DspexError):
    """A worker process failed to run a call."""

    code = "worker_error"


class WorkerCrashedError(WorkerError):
    """The worker process died while running the call."""

    code = "worker_crashed"


class WorkerSetupError(WorkerError):
    """The worker target cannot be pickled, or worker setup keeps failing; no call can run."""

    code = "worker_setup"


class WorkerTimeoutError(WorkerError, TimeoutError):
    """The call did not finish within its timeout."""

    code = "worker_timeout"


def _all_subclasses(cls: type[DspexError]) -> list[type[DspexError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


def error_class_for_code(code: str) -> type[DspexError] | None:
    """Return the error class whose stable ``code`` is ``code``, or None if unknown."""
    for cls in _all_subclasses(DspexError):
        if cls.code == code:
            return cls
    return None
