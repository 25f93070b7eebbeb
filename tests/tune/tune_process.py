"""A tuning run in its own process, for the kill -9, resume and lock-policy tests.

``python tune_process.py ADDRESS SESSION VARIABLE [options]`` joins the session in the store,
tunes one variable with :func:`dspex.tune` (in process, an example takes ``--delay`` seconds),
prints ``trial N STATE TIME`` after every trial and one JSON line with the outcome at the end. A
``LockedError`` prints ``locked: MESSAGE`` and exits 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).parent))

import tune_targets as targets

import dspex
from dspex.errors import LockedError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("session")
    parser.add_argument("variable")
    parser.add_argument("--optimizer-id", default=None)
    parser.add_argument("--policy", default="fail")
    parser.add_argument("--lock-timeout", type=float, default=None)
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def _said(study: Any, trial: Any) -> None:
    print(f"trial {trial.number} {trial.state.name.lower()} {time.time():.6f}", flush=True)


def main() -> int:
    args = _args()
    with dspex.Session(args.address, session_id=args.session) as session:
        try:
            result = dspex.tune(
                targets.ReadValues(delay=args.delay), targets.devset(args.examples),
                targets.seen_temperature if args.variable == "temperature" else targets.peak,
                variables=(args.variable,), n_trials=args.n_trials, storage=args.storage,
                study_name=f"study-{args.variable}", optimizer_id=args.optimizer_id,
                policy=args.policy, lock_timeout=args.lock_timeout,
                sampler=optuna.samplers.RandomSampler(seed=args.seed), callbacks=[_said],
            )  # fmt: skip
        except LockedError as exc:
            print(f"locked: {exc}", flush=True)
            return 3
        print(
            json.dumps({
                "best_values": result.best_values,
                "best_score": result.best_score,
                "kept_versions": {n: r.version for n, r in result.kept.items()},
                "kept_at": max((r.updated_at for r in result.kept.values()), default=None),
                "trials": len(result.study.trials),
                "value": session.get(args.variable),
            }),
            flush=True,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
