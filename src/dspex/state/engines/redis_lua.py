"""Engines: the Lua scripts that make each RedisEngine change atomic inside Redis.

Keys of one session share the hash tag ``{session}`` (escaped so ``}`` cannot end it early):

- ``P:{S}:meta`` hash: created_at, last_heartbeat, ttl, owner, revision, edges (JSON);
- ``P:{S}:vars`` hash: name -> current record JSON; ``P:{S}:revs``/``P:{S}:vers`` hashes:
  name -> revision/version of that record (the CAS and history checks read these, not JSON);
- ``P:{S}:h:NAME`` list: kept versions of NAME, oldest first;
- ``P:{S}:log`` list: the session's last ``log_size`` updates (revisions are consecutive);
- ``P:sessions`` hash: session id -> its key base ``P:{S}:``; ``P:feed`` stream: one entry per
  commit (``s`` session, ``u`` JSON array of updates), create (``e=create``) or drop
  (``e=drop``), read by every server's listener thread.

Every script checks everything before its first write: a Lua error after a write would leave
the change half-applied, since Redis does not roll scripts back.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHANGES", "COMMIT", "CREATE", "DROP", "PUT_EDGES", "SNAPSHOT", "TOUCH"]

CREATE: Final = """
-- KEYS: meta, sessions, feed; ARGV: session_id, now, ttl, owner, feed_size, key base
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'last_heartbeat', ARGV[2], 'ttl', ARGV[3],
           'owner', ARGV[4], 'revision', '0', 'edges', '[]')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[6])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 's', ARGV[1], 'e', 'create',
           'c', ARGV[2])
return 1
"""

TOUCH: Final = """
-- KEYS: meta; ARGV: now
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[1])
return 1
"""

DROP: Final = """
-- KEYS: meta, vars, revs, vers, log, sessions, feed; ARGV: session_id, history key prefix,
-- feed_size
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. name)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[3], '*', 's', ARGV[1], 'e', 'drop')
return 1
"""

COMMIT: Final = """
-- KEYS: meta, vars, revs, vers, log, feed
-- ARGV: session_id, history key prefix, history_size, log_size, feed_size, n, then per write:
--       name, expected revision ('' = absent), kind, version, record JSON up to its revision
-- Returns {-1} unknown session, {0, name} conflict, {1, first revision, deleted records...}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local at = 7 + i * 5
  local held = redis.call('HGET', KEYS[3], ARGV[at])
  if ARGV[at + 1] == '' then
    if held or ARGV[at + 2] == 'delete' then return {0, ARGV[at]} end
  elseif held ~= ARGV[at + 1] then
    return {0, ARGV[at]}
  end
end
local revision = tonumber(redis.call('HGET', KEYS[1], 'revision'))
local history_size, log_size = tonumber(ARGV[3]), tonumber(ARGV[4])
local result, updates = {1, revision + 1}, {}
for i = 0, n - 1 do
  local at = 7 + i * 5
  local name, kind, version = ARGV[at], ARGV[at + 2], ARGV[at + 3]
  local history = ARGV[2] .. name
  revision = revision + 1
  local rev = string.format('%d', revision)
  local record
  if kind == 'delete' then
    record = redis.call('HGET', KEYS[2], name)
    redis.call('HDEL', KEYS[2], name)
    redis.call('HDEL', KEYS[3], name)
    redis.call('HDEL', KEYS[4], name)
    redis.call('DEL', history)
    result[#result + 1] = record
  else
    record = ARGV[at + 4] .. rev .. '}'
    local last = redis.call('HGET', KEYS[4], name)
    if kind == 'register' or not last then
      redis.call('DEL', history)
      redis.call('RPUSH', history, record)
    elseif last == version and redis.call('EXISTS', history) == 1 then
      redis.call('LSET', history, -1, record)
    else
      redis.call('RPUSH', history, record)
      redis.call('LTRIM', history, -history_size, -1)
    end
    redis.call('HSET', KEYS[2], name, record)
    redis.call('HSET', KEYS[3], name, rev)
    redis.call('HSET', KEYS[4], name, version)
  end
  local update = '{"revision":' .. rev .. ',"kind":' .. cjson.encode(kind) .. ',"record":'
                 .. record .. '}'
  redis.call('RPUSH', KEYS[5], update)
  updates[#updates + 1] = update
end
redis.call('LTRIM', KEYS[5], -log_size, -1)
redis.call('HSET', KEYS[1], 'revision', string.format('%d', revision))
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', 's', ARGV[1],
           'u', '[' .. table.concat(updates, ',') .. ']')
return result
"""

CHANGES: Final = """
-- KEYS: meta, log; ARGV: after_revision
-- Returns {-1} unknown session, {0, oldest kept} compacted, {1, {updates...}}.
local revision = redis.call('HGET', KEYS[1], 'revision')
if not revision then return {-1} end
revision = tonumber(revision)
local after = tonumber(ARGV[1])
if after >= revision then return {1, {}} end
local oldest = revision - redis.call('LLEN', KEYS[2]) + 1
if after + 1 < oldest then return {0, oldest} end
return {1, redis.call('LRANGE', KEYS[2], after + 1 - oldest, -1)}
"""

PUT_EDGES: Final = """
-- KEYS: meta; ARGV: expected edges JSON, new edges JSON. Returns -1 unknown, 0 conflict, 1 ok.
local edges = redis.call('HGET', KEYS[1], 'edges')
if not edges then return -1 end
if edges ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'edges', ARGV[2])
return 1
"""

SNAPSHOT: Final = """
-- KEYS: sessions, feed. Returns {last feed id, session_id, revision, created_at, ...}: where
-- a listener starts reading the feed, and every session's state at that point.
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local out = {'0-0'}
if #last > 0 then out[1] = last[1][1] end
local bases = redis.call('HGETALL', KEYS[1])
for i = 1, #bases, 2 do
  local meta = redis.call('HMGET', bases[i + 1] .. 'meta', 'revision', 'created_at')
  if meta[1] then
    out[#out + 1] = bases[i]
    out[#out + 1] = meta[1]
    out[#out + 1] = meta[2]
  end
end
return out
"""
