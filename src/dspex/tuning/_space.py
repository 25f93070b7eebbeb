"""Layer 3 (tuning): the Optuna search space, read from the variables' types and constraints.

Each tuned variable becomes one ``optuna.distributions`` object:

* ``float`` with ``min`` and ``max`` -> ``FloatDistribution(min, max)``;
* ``integer`` with ``min`` and ``max`` -> ``IntDistribution(min, max)``;
* ``choice`` (and strings or modules with ``choices``) -> ``CategoricalDistribution(choices)``;
* ``boolean`` -> ``CategoricalDistribution((False, True))``;
* a free ``string`` -> ``CategoricalDistribution`` over the candidate list in the variable's
  metadata (``metadata={"candidates": [...]}``) or given by the caller.

The caller narrows or replaces any of them per variable: a ``(low, high)`` pair narrows a
numeric range, a list gives the categorical candidates, an Optuna distribution is used as is
(e.g. ``FloatDistribution(0.01, 1.0, log=True)``). Every value a distribution can produce is
checked against the variable's rules before anything runs, so a trial can never be refused for
breaking them. Sampling is Optuna's: dspex only describes the space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dspex._model import VariableRecord, validate
from dspex.errors import DspexError, TuningError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import Trial

__all__ = ["SpaceOverride", "fits", "search_space", "suggest"]

SpaceOverride = Any
"""What a caller may give per variable: ``(low, high)``, a list of candidates, or an Optuna
distribution (typed loosely so ``import dspex`` never needs optuna)."""


def search_space(
    records: Sequence[VariableRecord], overrides: Mapping[str, SpaceOverride] | None = None
) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every variable in ``records``, after ``overrides``.

    Raises:
        TuningError: a variable has no searchable range or candidates, an override does not
            fit its type, or a value of the space breaks the variable's rules (the message
            says which and what to pass instead).
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {r.name for r in records})
    if unknown:
        raise TuningError(
            f"search space given for {unknown}, which are not tuned; tune them too or drop "
            "them from `space`"
        )
    space = {r.name: _built(r, overrides.get(r.name)) for r in records}
    for record in records:
        _check_values(record, space[record.name])
    return space


def _built(record: VariableRecord, override: SpaceOverride) -> BaseDistribution:
    """:func:`_distribution`, with what Optuna refuses to build (bounds that are not numbers,
    no candidates) reported as the variable's bad search space."""
    try:
        return _distribution(record, override)
    except (TypeError, ValueError) as exc:
        raise TuningError(
            f"variable {record.name!r} ({record.type}): search space {override!r} not "
            f"understood ({exc}); give (low, high) numbers, a non-empty list of candidates or "
            "an optuna distribution; nothing was tuned"
        ) from exc


def _distribution(record: VariableRecord, override: SpaceOverride) -> BaseDistribution:
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(override, BaseDistribution):
        return override
    kind, rules = record.type, record.constraints
    numeric = {"float": FloatDistribution, "integer": IntDistribution}.get(kind)
    if numeric is not None:
        low, high = _range(record, override)
        return numeric(low, high)
    if override is not None and not isinstance(override, str | bytes) and _is_list(override):
        return CategoricalDistribution(tuple(override))
    if override is not None:
        raise TuningError(
            f"variable {record.name!r} ({kind}): search space {override!r} not understood; "
            "give a list of candidate values or an optuna distribution"
        )
    if kind == "boolean":
        return CategoricalDistribution((False, True))
    if "choices" in rules:
        return CategoricalDistribution(tuple(rules["choices"]))
    candidates = record.metadata.get("candidates")
    if kind in ("string", "module") and candidates:
        return CategoricalDistribution(tuple(candidates))
    raise TuningError(
        f"variable {record.name!r} ({kind}) has no search space: give candidates with "
        f"space={{{record.name!r}: [...]}} (or register it with metadata={{'candidates': "
        "[...]}}), or an optuna distribution"
    )


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence | set | frozenset)


def _range(record: VariableRecord, override: SpaceOverride) -> tuple[Any, Any]:
    rules = record.constraints
    if override is None:
        if "min" not in rules or "max" not in rules:
            raise TuningError(
                f"variable {record.name!r} ({record.type}) has no min/max to search; give a "
                f"range with space={{{record.name!r}: (low, high)}} or an optuna distribution"
            )
        return rules["min"], rules["max"]
    if not (isinstance(override, tuple | list) and len(override) == 2):
        raise TuningError(
            f"variable {record.name!r} ({record.type}): search space {override!r} not "
            "understood; give (low, high) or an optuna distribution"
        )
    low, high = override
    if not low < high:
        raise TuningError(f"variable {record.name!r}: range ({low!r}, {high!r}) is empty")
    return low, high


def _check_values(record: VariableRecord, distribution: BaseDistribution) -> None:
    """Every value ``distribution`` can produce must pass the variable's rules."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        values: Sequence[Any] = distribution.choices
    else:
        values = (getattr(distribution, "low", None), getattr(distribution, "high", None))
    for value in values:
        try:
            validate(record.spec, value, record.name)
        except DspexError as exc:
            raise TuningError(
                f"search space of {record.name!r} includes {value!r}, which the variable "
                f"refuses ({exc}); narrow the space; nothing was tuned"
            ) from exc


def fits(distribution: BaseDistribution, value: Any) -> bool:
    """True when ``value`` is one of the values ``distribution`` can produce."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
    return low is not None and high is not None and low <= value <= high


def suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    """Ask ``trial`` for ``name`` through the public ``suggest_*`` call of ``distribution``."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step,
            log=distribution.log,
        )  # fmt: skip
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step,
            log=distribution.log,
        )  # fmt: skip
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TuningError(
        f"variable {name!r}: distribution {type(distribution).__name__} is not supported; use "
        "FloatDistribution, IntDistribution or CategoricalDistribution"
    )
