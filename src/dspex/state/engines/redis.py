"""Engines: RedisEngine, sessions kept in Redis so several stateless servers share them.

Redis is the source of truth: reads go to Redis, and every change is one Lua script (see
:mod:`dspex.state.engines.redis_lua`) that checks each write's expected revision, assigns
consecutive session revisions, writes records, trims history and the change log, and appends
the change to the engine's feed stream, all atomically. A listener thread per engine reads the
feed (:mod:`dspex.state.engines.redis_feed`), so every server sees every server's commits.

Time is Redis's: every timestamp, lease and TTL decision uses :meth:`RedisEngine.now`, read
from Redis's ``TIME`` (and carried forward by the monotonic clock), so servers whose own clocks
disagree still agree on when a lease or a session expires.

Redis errors never escape: an unreachable Redis raises :class:`StoreUnavailableError` naming
the URL (without its password), anything else :class:`StoreError`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import OutOfMemoryError
from redis.retry import Retry

import dspex.errors as errors
from dspex._model import VariableRecord, VariableUpdate
from dspex.state.engines import redis_lua as lua
from dspex.state.engines.codec import decode_record, decode_update, record_dict
from dspex.state.engines.contract import (
    EngineConflict,
    EngineListener,
    LogCompacted,
    SessionMeta,
    UnknownSession,
    Write,
    check_sizes,
    write_deadline,
)
from dspex.state.engines.sizes import (
    HISTORY_BYTES,
    LOG_BYTES,
    SIZED_TYPES,
    budget_exceeded,
    value_size,
)

__all__ = ["FORMAT_VERSION", "RedisEngine"]

FORMAT_VERSION: Final = 2
"""Layout of the keys; a Redis whose ``P:format`` is higher was written by a newer dspex.

Format 2 keeps the size of every kept version and logged update beside it; a format 1 store
is upgraded when opened (its values count 0 bytes until they age out): stop every older
server sharing the Redis first."""

FEED_INLINE_BYTES: Final = 8 * 1024
"""A commit whose values take more bytes is announced in the feed by its revisions, and
listeners read it from the session's log: the feed holds at most about ``feed_size`` times
this many bytes of values."""

_CLOCK_SYNC: Final = 2.0
"""Seconds between reads of Redis's ``TIME`` for :meth:`RedisEngine.now`."""


class RedisEngine:
    """Sessions in Redis, shared by every server that opens the same URL and prefix.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://`` (TLS) or ``unix://path``.
        history_size: versions kept per variable.
        log_size: updates kept per session for resuming watches.
        prefix: key prefix; servers that share sessions use the same one.
        feed_size: approximate number of recent changes kept in the feed stream that
            listeners read; a listener further behind catches up from the session logs.
        history_bytes, log_bytes, max_session_bytes, max_store_bytes: the byte bounds and
            budgets of :class:`MemoryEngine`, kept in Redis: trimming and budget checks run
            inside the commit script, so every server sharing the Redis enforces one budget,
            and a refused write (``LimitExceededError``) is never applied.

    Raises:
        StoreUnavailableError: Redis cannot be reached at ``url``.
        StoreDataError: the keys were written by a newer dspex.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        history_size: int = 100,
        log_size: int = 10_000,
        prefix: str = "dspex",
        feed_size: int = 10_000,
        history_bytes: int = HISTORY_BYTES,
        log_bytes: int = LOG_BYTES,
        max_session_bytes: int | None = None,
        max_store_bytes: int | None = None,
    ) -> None:
        check_sizes(
            history_size=history_size,
            log_size=log_size,
            feed_size=feed_size,
            history_bytes=history_bytes,
            log_bytes=log_bytes,
            max_session_bytes=max_session_bytes,
            max_store_bytes=max_store_bytes,
        )
        self.url = url
        self.history_size = history_size
        self.log_size = log_size
        self.history_bytes = history_bytes
        self.log_bytes = log_bytes
        self.max_session_bytes = max_session_bytes
        self.max_store_bytes = max_store_bytes
        self.prefix = prefix
        self.feed_size = feed_size
        self.feed_key = f"{prefix}:feed"
        self.sessions_key = f"{prefix}:sessions"
        self.bytes_key = f"{prefix}:bytes"
        self.mark_key = f"{prefix}:mark"
        self._safe_url = _redact(url)
        self._feed: Any = None  # the _FeedReader, started by the first listen()
        # No automatic retry: a resent commit could apply twice; callers get a clear error.
        self.client = self.connect()
        self._scripts = {
            name: self.client.register_script(getattr(lua, name)) for name in lua.__all__
        }
        self._check_format()
        self._clock_offset = 0.0  # Redis TIME minus time.monotonic(), see now()
        self._clock_synced = -_CLOCK_SYNC
        self.now()

    def now(self) -> float:
        """Redis's own clock: every server sharing this Redis decides leases and TTLs by it.

        Read with ``TIME`` at most every ``_CLOCK_SYNC`` seconds and carried forward with this
        process's monotonic clock in between (off by at most a round trip). If Redis cannot be
        reached for a re-sync, the last offset is kept.

        Raises:
            StoreUnavailableError: Redis was never reachable to read its clock.
        """
        mono = time.monotonic()
        if mono - self._clock_synced >= _CLOCK_SYNC:
            try:
                with self.guard("read Redis's clock"):
                    seconds, micros = self.client.time()
            except errors.StoreError:
                if self._clock_synced < 0:
                    raise
            else:
                after = time.monotonic()
                self._clock_offset = seconds + micros / 1e6 - (mono + after) / 2
                self._clock_synced = mono = after
        return mono + self._clock_offset

    def connect(self, *, socket_timeout: float = 10.0) -> redis.Redis:
        """A new client for this engine's Redis (the feed reader uses its own)."""
        try:
            return redis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise errors.StoreUnavailableError(
                f"bad Redis URL {self._safe_url!r}: {exc}; use redis://HOST:PORT/DB",
                url=self._safe_url,
            ) from exc

    @property
    def safe_url(self) -> str:
        """The Redis URL without its password, for messages and logs."""
        return self._safe_url

    def mark(self) -> str:
        """This Redis's data mark, created by the first server to find none.

        A random id kept under ``PREFIX:mark``: it changes only when Redis lost its data
        (``FLUSHALL``, a restart without persistence, a failover to an empty replica). The
        feed reader compares it with the one it started with, to tell lost data from a quiet
        feed (:mod:`dspex.state.engines.redis_feed`).
        """
        with self.guard("read the store's data mark"):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self.mark_key, uuid.uuid4().hex, nx=True)
            pipe.get(self.mark_key)
            _, found = pipe.execute()
        return cast(str, found)

    def _check_format(self) -> None:
        key = f"{self.prefix}:format"
        with self.guard("open the store"):
            self.client.set(key, str(FORMAT_VERSION), nx=True)
            found = int(
                self._scripts["UPGRADE"](keys=[self.sessions_key, key], args=[FORMAT_VERSION])
            )
        if found > FORMAT_VERSION:
            raise errors.StoreDataError(
                f"Redis at {self._safe_url} holds dspex data of format {found} under prefix "
                f"{self.prefix!r}, written by a newer dspex; this dspex reads format "
                f"{FORMAT_VERSION} at most: upgrade dspex or use another prefix (nothing was "
                "touched)",
                url=self._safe_url,
                format_version=found,
            )

    @contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """Turn any Redis error inside the block into a clear dspex error."""
        try:
            yield
        except redis.AuthenticationError as exc:
            raise errors.StoreUnavailableError(
                f"cannot {action}: Redis at {self._safe_url} refused the credentials ({exc}); "
                "put the right user and password in the URL",
                url=self._safe_url,
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise errors.StoreUnavailableError(
                f"cannot {action}: Redis at {self._safe_url} is unreachable ({exc}); "
                "check that redis-server is running and the URL is right",
                url=self._safe_url,
            ) from exc
        except OutOfMemoryError as exc:
            raise errors.StoreDataError(
                f"cannot {action}: Redis at {self._safe_url} is out of memory ({exc}); raise "
                "its maxmemory or free space; the change was not applied",
                url=self._safe_url,
            ) from exc
        except redis.RedisError as exc:
            raise errors.StoreError(
                f"cannot {action}: Redis at {self._safe_url} refused it ({exc})",
                url=self._safe_url,
            ) from exc

    # -- keys ---------------------------------------------------------------------------------

    def base(self, session_id: str) -> str:
        """The key prefix of one session; the escaped id is the Redis Cluster hash tag."""
        tag = session_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
        return f"{self.prefix}:{{{tag}}}:"

    def _keys(self, session_id: str, *names: str) -> list[str]:
        base = self.base(session_id)
        return [base + name for name in names]

    def _run(self, script: str, keys: Sequence[str], args: Sequence[Any], action: str) -> Any:
        with self.guard(action):
            return self._scripts[script](keys=list(keys), args=list(args))

    # -- sessions -----------------------------------------------------------------------------

    def create_session(self, session_id: str, *, ttl: float | None, owner: str) -> bool:
        keys = [*self._keys(session_id, "meta"), self.sessions_key, self.feed_key]
        now, ttl_text = repr(self.now()), "" if ttl is None else repr(ttl)
        args = [session_id, now, ttl_text, owner, self.feed_size]
        args.append(self.base(session_id))
        return bool(self._run("CREATE", keys, args, f"create session {session_id!r}"))

    def session(self, session_id: str) -> SessionMeta | None:
        meta_key, vars_key = self._keys(session_id, "meta", "vars")
        with self.guard(f"read session {session_id!r}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(meta_key)
            pipe.hlen(vars_key)
            meta, count = pipe.execute()
        return _meta(session_id, meta, count) if meta else None

    def sessions(self) -> list[SessionMeta]:
        with self.guard("list sessions"):
            ids = sorted(cast(dict[str, str], self.client.hgetall(self.sessions_key)))
            pipe = self.client.pipeline(transaction=False)
            for session_id in ids:
                meta_key, vars_key = self._keys(session_id, "meta", "vars")
                pipe.hgetall(meta_key)
                pipe.hlen(vars_key)
            replies = pipe.execute()
        found = zip(ids, replies[::2], replies[1::2], strict=True)
        return [_meta(session_id, meta, count) for session_id, meta, count in found if meta]

    def touch(self, session_id: str, now: float) -> bool:
        keys = self._keys(session_id, "meta")
        return bool(self._run("TOUCH", keys, [repr(now)], f"heartbeat {session_id!r}"))

    def drop_session(self, session_id: str) -> bool:
        """Delete the session's keys; every server's listeners get ``closed=True``."""
        keys = self._keys(session_id, "meta", "vars", "revs", "vers", "log", "logz", "hbytes")
        keys += [self.sessions_key, self.feed_key, self.bytes_key]
        args = [session_id, self.base(session_id), self.feed_size]
        return bool(self._run("DROP", keys, args, f"drop session {session_id!r}"))

    # -- records ------------------------------------------------------------------------------

    def get(self, session_id: str, name: str) -> VariableRecord | None:
        meta_key, vars_key = self._keys(session_id, "meta", "vars")
        with self.guard(f"read {name!r} in session {session_id!r}"):
            text = self.client.hget(vars_key, name)
            if text is None and not self.client.exists(meta_key):
                raise UnknownSession(session_id)
        return None if text is None else decode_record(cast(str, text))

    def records(self, session_id: str) -> list[VariableRecord]:
        meta_key, vars_key = self._keys(session_id, "meta", "vars")
        with self.guard(f"read session {session_id!r}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.exists(meta_key)
            pipe.hvals(vars_key)
            exists, texts = pipe.execute()
        if not exists:
            raise UnknownSession(session_id)
        return [decode_record(text) for text in texts]

    def history(self, session_id: str, name: str) -> list[VariableRecord]:
        meta_key = self._keys(session_id, "meta")[0]
        with self.guard(f"read the history of {name!r} in session {session_id!r}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.exists(meta_key)
            pipe.lrange(self.base(session_id) + "h:" + name, 0, -1)
            exists, texts = pipe.execute()
        if not exists:
            raise UnknownSession(session_id)
        return [decode_record(text) for text in texts]

    def commit(self, session_id: str, writes: Sequence[Write]) -> list[VariableUpdate]:
        """Apply every write or none in one Lua script (see the class docstring)."""
        if len({write.name for write in writes}) != len(writes):
            raise ValueError(f"a commit names each variable at most once: {writes!r}")
        if not writes:
            if self.session(session_id) is None:
                raise UnknownSession(session_id)
            return []
        now = self.now()
        keys = [*self._keys(session_id, "meta", "vars", "revs", "vers", "log"), self.feed_key]
        keys += [*self._keys(session_id, "logz", "hbytes"), self.bytes_key]
        args: list[Any] = [session_id, self.base(session_id), self.history_size]
        args += [self.log_size, self.feed_size, len(writes), self.history_bytes, self.log_bytes]
        args += [_limit(self.max_session_bytes), _limit(self.max_store_bytes), FEED_INLINE_BYTES]
        args.append(self._deadline(now))
        for write in writes:
            args += _write_args(write, now)
        try:
            reply = self._run("COMMIT", keys, args, f"write to session {session_id!r}")
        except errors.StoreUnavailableError as exc:
            cause = exc.__cause__
            sent = isinstance(cause, redis.ConnectionError | redis.TimeoutError) and (
                "connecting" not in str(cause).lower()  # could not even connect: not sent
            )
            if sent:
                # The script may have run before the connection broke: say so, never "failed".
                raise errors.StoreUnavailableError(
                    f"{exc.message}; the connection broke after the write was sent, so it may "
                    "or may not have been applied: read the variable back before retrying",
                    **exc.details,
                    outcome_unknown=True,
                ) from exc
            raise
        if reply[0] != 1:
            raise self._refused(session_id, reply)
        deleted = iter(reply[2:])
        updates = []
        for revision, write in enumerate(writes, start=reply[1]):
            if write.kind == "delete":
                record = decode_record(next(deleted))
            else:
                record = VariableRecord(
                    write.name, write.spec, write.value, write.version, revision, now,
                    write.writer, write.metadata, write.stale, write.lock,
                )  # fmt: skip
            updates.append(VariableUpdate(revision, write.kind, write.name, record))
        return updates

    def _refused(self, session_id: str, reply: Sequence[Any]) -> Exception:
        """What the commit script's refusal ``reply`` stands for (nothing was applied)."""
        if reply[0] == -1:
            return UnknownSession(session_id)
        if reply[0] == 0:
            return EngineConflict(reply[1])
        if reply[0] == -2:
            return budget_exceeded(session_id if reply[1] == "session" else None, int(reply[2]))
        return errors.StoreUnavailableError(
            f"the write to session {session_id!r} reached Redis at {self._safe_url} after its "
            "caller had stopped waiting (Redis was stalled), so it was not applied",
            url=self._safe_url,
        )

    def _deadline(self, now: float) -> str:
        """The commit script's deadline: the caller's (:data:`write_deadline`) on Redis's
        clock, '' for none. A script that Redis runs later (it was stalled with the script
        in its buffer) applies nothing, so a write reported as timed out cannot land after
        writes its caller made once Redis was back."""
        deadline = write_deadline.get()
        return "" if deadline is None else repr(now + deadline - time.monotonic())

    def changes(self, session_id: str, after_revision: int) -> list[VariableUpdate]:
        keys = self._keys(session_id, "meta", "log")
        action = f"read the changes of session {session_id!r}"
        reply = self._run("CHANGES", keys, [after_revision], action)
        if reply[0] == -1:
            raise UnknownSession(session_id)
        if reply[0] == 0:
            raise LogCompacted(reply[1])
        return [decode_update(text) for text in reply[1]]

    def edges(self, session_id: str) -> list[tuple[str, str]]:
        meta_key = self._keys(session_id, "meta")[0]
        with self.guard(f"read the dependencies of session {session_id!r}"):
            text = self.client.hget(meta_key, "edges")
        if text is None:
            raise UnknownSession(session_id)
        return [(a, b) for a, b in json.loads(cast(str, text))]

    def put_edges(
        self, session_id: str, expect: Sequence[tuple[str, str]], edges: Sequence[tuple[str, str]]
    ) -> None:
        keys = self._keys(session_id, "meta")
        args = [_edges_json(expect), _edges_json(edges)]
        reply = self._run("PUT_EDGES", keys, args, f"change dependencies in {session_id!r}")
        if reply == -1:
            raise UnknownSession(session_id)
        if reply == 0:
            raise EngineConflict("edges")

    # -- feed ---------------------------------------------------------------------------------

    def snapshot(self) -> tuple[str, dict[str, tuple[int, str]]]:
        """The feed's last id and each session's (revision, created_at) at that point."""
        reply = self._run("SNAPSHOT", [self.sessions_key, self.feed_key], [], "read sessions")
        found = {reply[i]: (int(reply[i + 1]), reply[i + 2]) for i in range(1, len(reply) - 2, 3)}
        return reply[0], found

    def listen(self, listener: EngineListener) -> None:
        """Deliver every commit made through this Redis and prefix, by any server.

        The first call starts the feed reader thread (see :class:`_FeedReader`); updates made
        after ``listen`` returns are delivered in revision order, without gaps or duplicates.
        """
        if self._feed is None:
            from dspex.state.engines.redis_feed import FeedReader

            self._feed = FeedReader(self)
            self._feed.add(listener)
            self._feed.start()
        else:
            self._feed.add(listener)

    @property
    def blocks(self) -> bool:
        """Every call is a Redis round trip."""
        return True

    def close(self) -> None:
        """Stop the feed reader and drop the connections. Idempotent."""
        if self._feed is not None:
            self._feed.stop()
            self._feed = None
        self.client.close()


def _write_args(write: Write, now: float) -> list[Any]:
    """One write's arguments of the commit script, its value sized once, here, where the
    record is built (a delete's size is the deleted version's, which the script reads)."""
    expect = "" if write.expect_revision is None else str(write.expect_revision)
    if write.kind == "delete":
        size, prefix = 0, ""
    else:
        size = value_size(write.spec, write.value) if write.spec.type in SIZED_TYPES else 0
        prefix = _record_prefix(write, now)
    return [write.name, expect, write.kind, str(write.version), size, prefix]


def _record_prefix(write: Write, now: float) -> str:
    """The record's JSON up to its revision, which the commit script appends."""
    record = VariableRecord(
        write.name, write.spec, write.value, write.version, 0, now,
        write.writer, write.metadata, write.stale, write.lock,
    )  # fmt: skip
    data = record_dict(record)
    del data["revision"]
    return json.dumps(data, separators=(",", ":"))[:-1] + ',"revision":'


def _limit(budget: int | None) -> str:
    """A budget as a script argument ('' for none)."""
    return "" if budget is None else str(budget)


def _edges_json(edges: Sequence[tuple[str, str]]) -> str:
    return json.dumps([list(edge) for edge in edges], separators=(",", ":"))


def _meta(session_id: str, meta: dict[str, str], count: int) -> SessionMeta:
    ttl = meta.get("ttl", "")
    return SessionMeta(
        session_id,
        float(meta["created_at"]),
        float(meta["last_heartbeat"]),
        float(ttl) if ttl else None,
        int(meta["revision"]),
        meta["owner"],
        count,
    )


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
