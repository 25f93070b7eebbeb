"""Layer 3 demo: ``dspex.tune`` runs an Optuna study on the session while workers evaluate.

The search space comes from the variables' constraints (temperature's ``min``/``max``, the model
``Choice``) plus a list of instruction candidates. Each trial is written to the session under
the optimization lock and scored with ``answer_match`` on the bundled dev set by the
``dspex.Remote`` workers; Optuna's TPE sampler (seeded) picks the values and its median pruner
stops poor trials early.

The simulation is stated plainly: ``SimLM`` scores instructions by literal phrases of one word
list in ``dspex/data/sim_qa.json``. The candidates below were written as generic instructions,
not taken from that list; the demo prints which listed phrases each one happens to contain.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from dspex.demo._steps import DemoRun, show_value

__all__ = ["INSTRUCTION_CANDIDATES", "OPTIMIZER_ID", "VARIABLES", "TunedTrial", "run_study"]

OPTIMIZER_ID = "optuna-demo"
VARIABLES = ("temperature", "instructions", "model")
N_TRIALS = 16

INSTRUCTION_CANDIDATES = (
    "Answer in one sentence.",
    "Answer the question accurately.",
    "Think step by step, then give the final answer.",
    "Give only the final answer, with no explanation.",
    "Read the question carefully and answer it concisely.",
)
"""Generic instructions of the kind people write (and teleprompters propose) for a QA task;
written without looking at the simulation's word list."""


@dataclass(frozen=True)
class TunedTrial:
    """One Optuna trial as the demo shows it."""

    number: int
    values: dict[str, Any]
    state: str
    score: float | None
    revision: int | None


def scoring_phrases(text: str) -> list[str]:
    """The phrases of the simulation's word list (hints and penalties) found in ``text``."""
    from dspex.sim import knowledge

    kb = knowledge()
    words = [h for hints in kb.hints.values() for h in hints] + list(kb.penalties)
    return [w for w in words if w in text.lower()]


def explain_simulation(run: DemoRun) -> None:
    """Say what the simulation scores, and which scored phrases each candidate contains."""
    from dspex.sim import knowledge

    kb = knowledge()
    hints = "; ".join(f"{task}: {', '.join(h)}" for task, h in kb.hints.items())
    run.say(
        "[yellow]about the simulation[/yellow]: SimLM does not read meaning. Its accuracy rises "
        "with model size and low temperature, and with instructions that contain literal "
        f"phrases of one word list ({hints}); it drops with {', '.join(kb.penalties)}. A "
        "faithful paraphrase without those phrases scores like no instructions."
    )
    for text in INSTRUCTION_CANDIDATES:
        found = scoring_phrases(text)
        run.say(f"  candidate {text!r}: scored phrases {found or 'none'}")


def run_study(run: DemoRun, remote: Any) -> list[TunedTrial]:
    """Tune the three variables with ``dspex.tune`` on ``remote``; return the trials."""
    import optuna

    from dspex.sim import answer_match, load_devset
    from dspex.tuning import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    devset = load_devset()
    explain_simulation(run)
    run.say(
        f"Optuna TPE (seed 0) over temperature [0.0, 2.0], {len(INSTRUCTION_CANDIDATES)} "
        f"instructions and 3 models; {N_TRIALS} trials of {len(devset)} dev examples on "
        f"{remote.workers} workers, median pruner after every 6 examples"
    )
    shown: list[bool] = []

    def first_trial(study: Any, trial: Any) -> None:
        if not shown:  # while the lock is held: another writer is refused
            shown.append(True)
            _refused_while_locked(run)

    result = tune(
        run.notes["program"], devset, answer_match, variables=VARIABLES,
        space={"instructions": list(INSTRUCTION_CANDIDATES)}, n_trials=N_TRIALS,
        workers=remote, batch=6, optimizer_id=OPTIMIZER_ID, callbacks=[first_trial],
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4),
    )  # fmt: skip
    run.notes["tune_result"] = result
    return [_shown(t) for t in result.study.trials]


def _shown(trial: Any) -> TunedTrial:
    score = None if trial.value is None else round(100 * trial.value, 1)
    return TunedTrial(
        trial.number, dict(trial.params), trial.state.name.lower(), score,
        trial.user_attrs.get("dspex_revision"),
    )  # fmt: skip


def describe(values: dict[str, Any]) -> str:
    """One line for a setting of the tuned variables."""
    return ", ".join(f"{n}={show_value(values.get(n), 40)}" for n in VARIABLES)


def _refused_while_locked(run: DemoRun) -> None:
    """Show another process (``dspex vars set``) refused while the optimizer holds the locks."""
    session = run.session
    if session.address is None:
        return
    args = ["vars", "set", "--store", session.address, "--session", session.session_id]
    args += ["temperature", "1.0"]
    env = {**os.environ, "NO_COLOR": "1"}
    if session.store_token is not None:
        env["DSPEX_TOKEN"] = session.store_token
    command = [sys.executable, "-c", "import sys; from dspex.cli import main; sys.exit(main())"]
    completed = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    said = (completed.stderr or completed.stdout).strip().splitlines()
    run.say(
        "another process runs `dspex vars set ... temperature 1.0` -> "
        f"exit {completed.returncode}: [yellow]{said[-1] if said else ''}[/yellow]"
    )
