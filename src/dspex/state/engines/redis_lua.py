"""Engines: the Lua scripts that make each RedisEngine change atomic inside Redis.

Keys of one session share the hash tag ``{session}`` (escaped so ``}`` cannot end it early):

- ``P:{S}:meta`` hash: created_at, last_heartbeat, ttl, owner, revision, edges (JSON), bytes
  (of values kept in every history: what the session's budget counts), log_bytes;
- ``P:{S}:vars`` hash: name -> current record JSON; ``P:{S}:revs``/``P:{S}:vers`` hashes:
  name -> revision/version of that record (the CAS and history checks read these, not JSON);
- ``P:{S}:h:NAME`` list: kept versions of NAME, oldest first; ``P:{S}:z:NAME`` list: the size
  in bytes of each kept version's value, beside it; ``P:{S}:hbytes`` hash: name -> their sum;
- ``P:{S}:log`` list: the session's last updates (revisions are consecutive), bounded by
  ``log_size`` and ``log_bytes``; ``P:{S}:logz`` list: each logged update's size, beside it;
- ``P:sessions`` hash: session id -> its key base ``P:{S}:``; ``P:feed`` stream: one entry per
  commit (``s`` session, ``u`` JSON array of updates; a commit whose values take more than
  ``feed_inline_bytes`` carries ``f``/``r``, its first and last revision, instead, and
  listeners read it from the session's log, so the feed's memory stays bounded), create
  (``e=create``) or drop (``e=drop``), read by every server's listener thread; ``P:bytes``:
  bytes of values kept in every session (what the whole-store budget counts, one for every
  server on the Redis).

Sizes are computed once by the server that builds a record (the same rule as the other
engines) and travel with the write; trimming and budgets read the kept sizes.

Every script checks everything before its first write: a Lua error after a write would leave
the change half-applied, since Redis does not roll scripts back. So a write refused by a byte
budget is never applied.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHANGES", "COMMIT", "CREATE", "DROP", "PUT_EDGES", "SNAPSHOT", "TOUCH", "UPGRADE"]

CREATE: Final = """
-- KEYS: meta, sessions, feed; ARGV: session_id, now, ttl, owner, feed_size, key base
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'last_heartbeat', ARGV[2], 'ttl', ARGV[3],
           'owner', ARGV[4], 'revision', '0', 'edges', '[]', 'bytes', '0', 'log_bytes', '0')
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
-- KEYS: meta, vars, revs, vers, log, log sizes, history bytes, sessions, feed, store bytes
-- ARGV: session_id, key base, feed_size
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. 'h:' .. name, ARGV[2] .. 'z:' .. name)
end
local held = tonumber(redis.call('HGET', KEYS[1], 'bytes')) or 0
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
if held ~= 0 then redis.call('DECRBY', KEYS[10], held) end
redis.call('HDEL', KEYS[8], ARGV[1])
redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[3], '*', 's', ARGV[1], 'e', 'drop')
return 1
"""

COMMIT: Final = """
-- KEYS: meta, vars, revs, vers, log, feed, log sizes, history bytes, store bytes
-- ARGV: session_id, key base, history_size, log_size, feed_size, n, history_bytes, log_bytes,
--       max_session_bytes ('' = none), max_store_bytes ('' = none), feed_inline_bytes,
--       deadline (Redis TIME seconds; '' = none), then per write:
--       name, expected revision ('' = absent), kind, version, value size in bytes,
--       record JSON up to its revision
-- Returns {-1} unknown session, {0, name} conflict, {-2, 'session' or 'store', limit} over a
-- byte budget, {-3} past the deadline (nothing applied), {1, first revision, deleted records...}.
local W, FIRST = 6, 13
if ARGV[12] ~= '' then
  local now = redis.call('TIME')
  if tonumber(now[1]) + tonumber(now[2]) / 1000000 > tonumber(ARGV[12]) then return {-3} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local at = FIRST + i * W
  local held = redis.call('HGET', KEYS[3], ARGV[at])
  if ARGV[at + 1] == '' then
    if held or ARGV[at + 2] == 'delete' then return {0, ARGV[at]} end
  elseif held ~= ARGV[at + 1] then
    return {0, ARGV[at]}
  end
end
local base = ARGV[2]
local history_size, log_size = tonumber(ARGV[3]), tonumber(ARGV[4])
local history_bytes, log_bytes = tonumber(ARGV[7]), tonumber(ARGV[8])

local function size_at(sizes, index)
  return tonumber(redis.call('LINDEX', sizes, index)) or 0
end

-- What each write does to its history: 'new', 'annotate' or 'append' (deletes: 'delete').
local function shape(kind, name, version)
  if kind == 'delete' or kind == 'register' then return kind end
  local last = redis.call('HGET', KEYS[4], name)
  if not last then return 'new' end
  if last == version and redis.call('EXISTS', base .. 'h:' .. name) == 1 then
    return 'annotate'
  end
  return 'append'
end

-- Bytes the history of name keeps once a version of size bytes is appended (nothing changes).
-- (The same rule as the trim below: drop the oldest while too many or too large.)
local function after_append(name, held, size)
  local sizes = base .. 'z:' .. name
  local count, total, first = redis.call('LLEN', base .. 'h:' .. name) + 1, held + size, 0
  while count > 1 and (count > history_size or total > history_bytes) do
    total, first, count = total - size_at(sizes, first), first + 1, count - 1
  end
  return total
end

if ARGV[9] ~= '' or ARGV[10] ~= '' then
  local growth = 0
  for i = 0, n - 1 do
    local at = FIRST + i * W
    local name, size = ARGV[at], tonumber(ARGV[at + 4])
    local held = tonumber(redis.call('HGET', KEYS[8], name)) or 0
    local how = shape(ARGV[at + 2], name, ARGV[at + 3])
    if how == 'delete' then
      growth = growth - held
    elseif how == 'annotate' then
      growth = growth + size - size_at(base .. 'z:' .. name, -1)
    elseif how == 'append' then
      growth = growth + after_append(name, held, size) - held
    else
      growth = growth + size - held
    end
  end
  if growth > 0 then
    local limit = tonumber(ARGV[9])
    local kept = tonumber(redis.call('HGET', KEYS[1], 'bytes')) or 0
    if limit and kept + growth > limit then return {-2, 'session', ARGV[9]} end
    limit = tonumber(ARGV[10])
    kept = tonumber(redis.call('GET', KEYS[9])) or 0
    if limit and kept + growth > limit then return {-2, 'store', ARGV[10]} end
  end
end

local revision = tonumber(redis.call('HGET', KEYS[1], 'revision'))
local result, updates = {1, revision + 1}, {}
local kept_delta = 0
local log_total = tonumber(redis.call('HGET', KEYS[1], 'log_bytes')) or 0
local feed_total = 0
for i = 0, n - 1 do
  local at = FIRST + i * W
  local name, kind, version, size = ARGV[at], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local history, sizes = base .. 'h:' .. name, base .. 'z:' .. name
  local held = tonumber(redis.call('HGET', KEYS[8], name)) or 0
  local how = shape(kind, name, version)
  revision = revision + 1
  local rev = string.format('%d', revision)
  local record, total
  if how == 'delete' then
    record = redis.call('HGET', KEYS[2], name)
    size = string.format('%d', size_at(sizes, -1))
    redis.call('HDEL', KEYS[2], name)
    redis.call('HDEL', KEYS[3], name)
    redis.call('HDEL', KEYS[4], name)
    redis.call('HDEL', KEYS[8], name)
    redis.call('DEL', history, sizes)
    result[#result + 1] = record
    total = 0
  else
    record = ARGV[at + 5] .. rev .. '}'
    if how == 'annotate' then
      total = held - size_at(sizes, -1) + tonumber(size)
      redis.call('LSET', history, -1, record)
      if redis.call('LLEN', sizes) > 0 then
        redis.call('LSET', sizes, -1, size)
      else
        redis.call('RPUSH', sizes, size)
      end
    elseif how == 'append' then
      redis.call('RPUSH', history, record)
      redis.call('RPUSH', sizes, size)
      total = held + tonumber(size)
      local count = redis.call('LLEN', history)
      while count > 1 and (count > history_size or total > history_bytes) do
        redis.call('LPOP', history)
        total = total - (tonumber(redis.call('LPOP', sizes)) or 0)
        count = count - 1
      end
    else
      redis.call('DEL', history, sizes)
      redis.call('RPUSH', history, record)
      redis.call('RPUSH', sizes, size)
      total = tonumber(size)
    end
    redis.call('HSET', KEYS[2], name, record)
    redis.call('HSET', KEYS[3], name, rev)
    redis.call('HSET', KEYS[4], name, version)
    redis.call('HSET', KEYS[8], name, string.format('%d', total))
  end
  kept_delta = kept_delta + total - held
  local update = '{"revision":' .. rev .. ',"kind":' .. cjson.encode(kind) .. ',"record":'
                 .. record .. '}'
  redis.call('RPUSH', KEYS[5], update)
  redis.call('RPUSH', KEYS[7], size)
  log_total = log_total + tonumber(size)
  feed_total = feed_total + tonumber(size)
  updates[#updates + 1] = update
end
local count = redis.call('LLEN', KEYS[5])
while count > 1 and (count > log_size or log_total > log_bytes) do
  redis.call('LPOP', KEYS[5])
  log_total = log_total - (tonumber(redis.call('LPOP', KEYS[7])) or 0)
  count = count - 1
end
redis.call('HSET', KEYS[1], 'revision', string.format('%d', revision),
           'log_bytes', string.format('%d', log_total))
if kept_delta ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'bytes', kept_delta)
  redis.call('INCRBY', KEYS[9], kept_delta)
end
if feed_total > tonumber(ARGV[11]) then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', 's', ARGV[1],
             'f', string.format('%d', result[2]), 'r', string.format('%d', revision))
else
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', 's', ARGV[1],
             'u', '[' .. table.concat(updates, ',') .. ']')
end
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

UPGRADE: Final = """
-- KEYS: sessions, format; ARGV: the new format. From format 1 (no sizes kept): every kept
-- version and logged update gets a size of 0 beside it (values written before the upgrade
-- count 0 bytes until they age out). Returns the format found.
local found = tonumber(redis.call('GET', KEYS[2])) or 1
if found ~= 1 then return found end
local bases = redis.call('HGETALL', KEYS[1])
for i = 2, #bases, 2 do
  local base = bases[i]
  for _, name in ipairs(redis.call('HKEYS', base .. 'vars')) do
    redis.call('DEL', base .. 'z:' .. name)
    for _ = 1, redis.call('LLEN', base .. 'h:' .. name) do
      redis.call('RPUSH', base .. 'z:' .. name, '0')
    end
  end
  redis.call('DEL', base .. 'logz')
  for _ = 1, redis.call('LLEN', base .. 'log') do redis.call('RPUSH', base .. 'logz', '0') end
end
redis.call('SET', KEYS[2], ARGV[1])
return found
"""
