"""Server side: the session-store and tool-store servicers on ``grpc.aio`` and their runner.

``server`` runs a store (``StoreServer``, ``serve``); ``servicer`` wraps any StateProvider
with transport, access control and limits; ``calls`` is every call's prologue and guard;
``locking`` and ``tools`` hold the lock and tool RPCs; ``feed`` is each watched session's one
shared change log, read by watch streams (``streams``) that ``wakeups`` gives turns to send;
``observe`` lets ``metrics`` (Prometheus, optional) and ``tracing`` (OpenTelemetry, optional)
see every call.
Never imports the client (an import-linter contract keeps the two sides independent).
"""
