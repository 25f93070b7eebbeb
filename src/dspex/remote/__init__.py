"""Layer 3: ``dspex.Remote``, a DSPy module running in spawned worker processes of a session.

Creating a Remote promotes the current session to a session store (an embedded server for an
in-process session) and starts a :class:`dspex.runtime.WorkerPool` whose workers join the session
by address; see :class:`Remote`.
"""

from __future__ import annotations

from dspex.remote._remote import Remote

__all__ = ["Remote"]
