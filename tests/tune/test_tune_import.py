"""``import dspex`` (and reaching ``dspex.tune``) loads no Optuna: it comes in with a run."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import dspex
after_import = "optuna" in sys.modules
tune = dspex.tune
print(json.dumps({"import": after_import, "attribute": "optuna" in sys.modules,
                  "callable": callable(tune)}))
"""


def test_import_dspex_and_its_tune_name_do_not_load_optuna() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"import": False, "attribute": False, "callable": True}
