"""Layer 3 demo: ``dspex demo`` as an ordered list of small, real steps.

Each capability contributes a list of :class:`DemoStep`; ``STEPS`` is their concatenation.
"""

from __future__ import annotations

from dspex.demo._dspy import DSPY_STEPS
from dspex.demo._local import LOCAL_STEPS
from dspex.demo._run import STEPS, run_demo
from dspex.demo._steps import DemoRun, DemoStep, LiveWatcher

__all__ = ["DSPY_STEPS", "LOCAL_STEPS", "STEPS", "DemoRun", "DemoStep", "LiveWatcher", "run_demo"]
