"""The Lua scripts of the store: each one atomic step in one hash slot.

**Events** (``append_events``) touch the user's slot and the global slot, so they are three
single-slot steps, each one atomic Lua script, and each safe to run again:

1. *user slot*, per user: if an event's idempotency key holds another event's digest, write
   nothing and report it (``IdempotencyConflict``); else for each event whose idempotency key
   is new (``SET NX`` of the event's digest), append the history record, drop the page cache,
   and push ``(seq, region, event, earliest)`` onto the user's outbox, ``earliest`` being what the
   user's history held of the title before it (``PRIOR``): popularity counts a viewer once per
   title (``homepage.eventlog.first_of_pairs``), and only this slot knows the user's history. The script returns the whole
   outbox, including entries an earlier failed call left behind. The attempt's token
   (``try``) makes a resent script (a client-side retry after a lost reply) return the first
   result instead of applying twice.
2. *global slot*, one script for the batch: for each outbox entry whose ``seq`` is above the
   user's high-water mark in ``applied``: add it to the events stream and the counters, and
   raise the mark. Entries already applied are skipped, so this step never counts twice.
3. *user slot*, per user: drop the outbox entries at or below the mark step 2 returned.

Only after step 3 is the batch acknowledged. If a step fails (a node down, a timeout), the
call raises ``StoreUnavailable`` and the API answers 503. A retry with the same idempotency
keys skips step 1's writes for those events but gets the pending outbox back, so steps 2 and
3 finish the earlier attempt: an acknowledged event is in the user's history, the stream and
the counters exactly once. Between the steps a reader may see an event in the user's
history before it is in the world counters (at most until the retry, the user's next event,
or ``gc``, which drains abandoned outboxes). Keyless events apply once per call, as before.
Events go to the version active when the call started; the stream records which.

A batch of several users is checked for reused keys (read-only, one round-trip) before step 1,
so a refused batch writes nothing. Step 1's own check is atomic per user only: a concurrent
request that takes one of the batch's keys for another event between that read and step 1
refuses that user's events, while the other users' are applied (and finished by steps 2 and 3);
``IdempotencyConflict.applied`` says how many. A batch of one user (what a device sends) has no
such window.
"""

ATTEMPT_TTL_SECONDS = 60  # a resent step-1 script is recognised this long (redis-py resends within seconds)

# What the user's history holds of the titles of a call's records, from the packed history
# (``records.HISTORY_DTYPE``: title id <i8 at byte 0, ts <i8 at 8, kind at 16, stars <f4 at 17):
# per title id's 8 bytes, {ts of the earliest play or rating, ts of the earliest rating, its stars as
# "%.17g"} (-1, -1, "" for none). Read once per call and kept up to date with the call's own records,
# so a flood of one title costs one read. One or two titles: a plain find of their 8 bytes, kept at
# record boundaries (C speed: 6 ms over a history at its 100,000-record bound); more: one pass over
# the records (17 ms there). Histories are usually hundreds of records: well under a millisecond.
PRIOR = """
local function note(found, s, at)
  local ts = struct.unpack('<i8', s, at + 8)
  if found[1] < 0 or ts < found[1] then found[1] = ts end
  if struct.unpack('b', s, at + 16) == 1 and (found[2] < 0 or ts < found[2]) then
    found[2] = ts
    found[3] = string.format('%.17g', struct.unpack('<f', s, at + 17))
  end
end
local function earliest_of(hist, wanted, n, size)
  local out = {}
  for needle in pairs(wanted) do out[needle] = {-1, -1, ''} end
  if n <= 2 then
    for needle, found in pairs(out) do
      local pos = 1
      while true do
        local at = string.find(hist, needle, pos, true)
        if not at then break end
        if (at - 1) % size == 0 then
          note(found, hist, at)
          pos = at + size
        else
          pos = at + 1
        end
      end
    end
  else
    for at = 1, #hist - size + 1, size do
      local found = out[string.sub(hist, at, at + 7)]
      if found then note(found, hist, at) end
    end
  end
  return out
end
"""

# KEYS: hist, page, API profile, outbox, seq, attempt, version's profile, idempotency keys...
# ARGV: idempotency TTL, attempt TTL, the history's most bytes (0: no bound) and the bytes it keeps past
#       them (its newest records), the bytes of a history record, then per event: idempotency key's
#       KEYS index (0: none), the event's digest, history record (empty: not part of the state), payload (JSON)
# Returns {applied, outbox}, or {-1, positions (1-based) of events whose key holds another event's
# digest} having written nothing. A key holding "1" (written before digests) matches any event.
# An outbox entry is "seq JSON[region, payload, earliest]", earliest as PRIOR returns it ({} for an event without a record).
USER_STEP = PRIOR + """
local prior = redis.call('GET', KEYS[6])
if prior then
  return {tonumber(prior), redis.call('LRANGE', KEYS[4], 0, -1)}
end
local held, reused = {}, {}
for i = 6, #ARGV, 4 do
  local ki = tonumber(ARGV[i])
  if ki > 0 then
    local was = held[KEYS[ki]]
    if was == nil then was = redis.call('GET', KEYS[ki]) end
    if was and was ~= '1' and was ~= ARGV[i + 1] then
      reused[#reused + 1] = (i - 6) / 4 + 1
    end
    held[KEYS[ki]] = was or ARGV[i + 1]
  end
end
if #reused > 0 then
  return {-1, reused}
end
local profile = KEYS[7]
if redis.call('HEXISTS', KEYS[3], 'api') == 1 then profile = KEYS[3] end
local region = redis.call('HGET', profile, 'region') or ''
local applied = 0
local size = tonumber(ARGV[5])
local wanted, n = {}, 0
for i = 6, #ARGV, 4 do
  local needle = string.sub(ARGV[i + 2], 1, 8)
  if #needle == 8 and not wanted[needle] then
    wanted[needle] = true
    n = n + 1
  end
end
local hist = redis.call('GET', KEYS[1]) or ''
local known = earliest_of(hist, wanted, n, size)
local added = {}
for i = 6, #ARGV, 4 do
  local ki = tonumber(ARGV[i])
  local fresh = true
  if ki > 0 then
    fresh = redis.call('SET', KEYS[ki], ARGV[i + 1], 'NX', 'EX', ARGV[1])
  end
  if fresh then
    applied = applied + 1
    local earliest = {}
    if #ARGV[i + 2] > 0 then
      local found = known[string.sub(ARGV[i + 2], 1, 8)]
      earliest = {found[1], found[2], found[3]}
      note(found, ARGV[i + 2], 1)
      added[#added + 1] = ARGV[i + 2]
    end
    local seq = redis.call('INCR', KEYS[5])
    redis.call('RPUSH', KEYS[4], seq .. ' ' .. cjson.encode({region, ARGV[i + 3], earliest}))
  end
end
-- under 1 MB the history is written whole, at its size: APPEND grows a string to twice its length there
-- (Redis's greedy allocation), so one play doubled the memory of a history published at its size. Past
-- 1 MB APPEND adds at most 1 MB, and a rewrite (a Lua concat of the whole history) doubled the call's time
local most, tail = tonumber(ARGV[3]), table.concat(added)
if most > 0 and #hist + #tail > most then  -- a client flooding one user: every page miss would move the whole history
  hist = hist .. tail
  redis.call('SET', KEYS[1], string.sub(hist, #hist - tonumber(ARGV[4]) + 1))
elseif #hist + #tail < 1048576 and #tail > 0 then
  redis.call('SET', KEYS[1], hist .. tail)
elseif #tail > 0 then
  redis.call('APPEND', KEYS[1], tail)
end
if #added > 0 then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[6], applied, 'EX', ARGV[2])
return {applied, redis.call('LRANGE', KEYS[4], 0, -1)}
"""

# KEYS: events stream, applied marks, stream tally, counter keys...
# ARGV: stream cap, JSON [[user, seq, [stream fields...], [[command, KEYS index, args...], ...]], ...]
# (a command "REGION" is a region's counters, kept only while the version has room for the region)
GLOBAL_STEP = """
local doc = cjson.decode(ARGV[2])
local marks, start, order = {}, {}, {}
for _, en in ipairs(doc) do
  local u, seq = en[1], tonumber(en[2])
  if marks[u] == nil then
    marks[u] = tonumber(redis.call('HGET', KEYS[2], u) or '0')
    start[u] = marks[u]
    order[#order + 1] = u
  end
  if seq > marks[u] then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(en[3]))
    redis.call('HINCRBY', KEYS[3], 'added', 1)
    for _, op in ipairs(en[4]) do
      if op[1] == 'REGION' then
        -- {'REGION', regions set, region, counts, count increment, {{decayed sums, weight}, ...}, title, most regions}:
        -- a region counts only if the version has it already or has room for it (each costs every worker memory)
        if redis.call('SISMEMBER', KEYS[op[2]], op[3]) == 1 or redis.call('SCARD', KEYS[op[2]]) < tonumber(op[8]) then
          redis.call('SADD', KEYS[op[2]], op[3])
          if op[5] ~= '0' then redis.call('HINCRBY', KEYS[op[4]], op[7], op[5]) end
          for _, sw in ipairs(op[6]) do redis.call('HINCRBYFLOAT', KEYS[sw[1]], op[7], sw[2]) end
        end
      else
        redis.call(op[1], KEYS[op[2]], unpack(op, 3))
      end
    end
    marks[u] = seq
  end
end
local out = {}
for _, u in ipairs(order) do
  if marks[u] > start[u] then
    redis.call('HSET', KEYS[2], u, marks[u])
  end
  out[#out + 1] = u
  out[#out + 1] = tostring(marks[u])
end
return out
"""

# KEYS: the user's sequence counter, then keys to delete (all in the user's slot). Returns the
# sequence and how many keys went: one step, so no event batch's user step falls in between.
ERASE_USER_SLOT = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
end
return {seq, n}
"""

# KEYS: events stream, erasure record, applied marks, erased sequences, erasure counts; ARGV: user id,
# the user's event sequence now. Counts the user's erasures (the position alone does not tell two
# erasures apart when the stream took nothing in between). Records the stream position of an erasure: the last id the stream generated (deleted
# entries included, so it never goes backwards), or the server's time when there is no stream, and the
# sequence (entries numbered above it are new activity, even those the stream holds before the
# position); and raises the user's applied mark to their sequence, so a batch in flight (its user step
# done before the erasure, its stream step after) is refused instead of entering the stream as new activity.
ERASE_MARK = """
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
local at = nil
if ok then
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then at = info[i + 1] end
  end
end
if not at then
  local t = redis.call('TIME')
  at = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) .. '-0'
end
redis.call('HSET', KEYS[2], ARGV[1], at)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
local seq = tonumber(ARGV[2])
if seq > tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[3], ARGV[1], seq)
end
return at
"""

# KEYS: a hash; ARGV: field, the value expected, the new value ('' deletes). A compare-and-set.
REPLACE_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""

# KEYS: events stream, stream tally; ARGV: entry ids. Erases entries; the tally counts what went.
ERASE_ENTRIES = """
local n = redis.call('XDEL', KEYS[1], unpack(ARGV))
if n > 0 then redis.call('HINCRBY', KEYS[2], 'erased', n) end
return n
"""

# KEYS: outbox; ARGV: the user's mark in the global slot
TRIM_STEP = """
local mark, n = tonumber(ARGV[1]), 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(string.match(head, '^(%d+)')) > mark then
    return n
  end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
"""

# KEYS: page, hist, version's profile, API profile, the user's event sequence (one user slot)
# ARGV: cache field, page, TTL, then what the page was built from: history length, region, genres; then the most fields;
#       then the event sequence as read ('' for none: an erasure keeps it, so new events after one change it)
# The TTL runs from the hash's first field and a full hash starts over: a client varying a parameter
# (region, sizes) per request cannot keep a user's cache growing, nor a page alive past the TTL.
CACHE_PAGE = """
local profile = KEYS[3]
if redis.call('HEXISTS', KEYS[4], 'api') == 1 then profile = KEYS[4] end
if redis.call('STRLEN', KEYS[2]) ~= tonumber(ARGV[4])
  or (redis.call('HGET', profile, 'region') or '') ~= ARGV[5]
  or (redis.call('HGET', profile, 'genres') or '') ~= ARGV[6]
  or (redis.call('GET', KEYS[5]) or '') ~= ARGV[8] then
  return 0
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

# KEYS: API profile, the version's profile, page keys to drop (one user slot)
# ARGV: region: keep|set|clear, the region, genres: keep|set, genres (JSON)
# A user's first PATCH starts from the profile they see (the version's), so a field not sent keeps it.
# The first write is an HSET: Redis refuses a script out of memory only at its first write, and a DEL
# first let every user's first PATCH through past maxmemory (while PUT got 503).
PATCH_PROFILE = """
local first = redis.call('HEXISTS', KEYS[1], 'api') == 0
redis.call('HSET', KEYS[1], 'api', '1')
if first then
  local seen = {}
  if KEYS[2] ~= KEYS[1] then seen = redis.call('HGETALL', KEYS[2]) end
  redis.call('DEL', KEYS[1])
  if #seen > 0 then redis.call('HSET', KEYS[1], unpack(seen)) end
  redis.call('HSET', KEYS[1], 'api', '1')
end
if ARGV[1] == 'set' then redis.call('HSET', KEYS[1], 'region', ARGV[2]) end
if ARGV[1] == 'clear' then redis.call('HDEL', KEYS[1], 'region') end
if ARGV[3] == 'set' then redis.call('HSET', KEYS[1], 'genres', ARGV[4]) end
redis.call('HSETNX', KEYS[1], 'genres', '[]')
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""
