"""Lua scripts that make every queue transition one atomic step in Redis.

Each script checks the ticket's current status (and owner) before it changes anything, so two
gateway processes, a reaper and a seat racing on the same ticket cannot double-offer or lose it:
the loser gets a status code back, never a half-done change. Keys are documented in
docs/redis-keys.md. Ticket hash fields: doc (ticket JSON without status/agent/history), status,
agent, stream, entry.
"""

from __future__ import annotations

# Common helpers prepended to every script.
_PRELUDE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function id_less(a, b)
  local ams, aseq = id_parts(a)
  local bms, bseq = id_parts(b)
  if ams ~= bms then return ams < bms end
  return aseq < bseq
end
local function ensure_group(stream, group)
  local ok = pcall(redis.call, 'XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  return ok
end
local function queue_of(stream)
  return string.match(stream or '', ':q:(.+):%d+$')
end
-- Today's counters of a queue (a hash per day): `{queue}:{counter}` += by.
local function count(stats, ttl, queue, counter, by)
  if stats == '' or not queue then return end
  redis.call('HINCRBY', stats, queue .. ':' .. counter, by)
  redis.call('EXPIRE', stats, ttl)
end
-- Append to a ticket's conversation, keeping its last `max` messages (the others counted).
local function append_message(tkey, message, max)
  local mkey = tkey .. ':m'
  redis.call('RPUSH', mkey, message)
  local over = redis.call('LLEN', mkey) - tonumber(max)
  if over > 0 then
    redis.call('LTRIM', mkey, over, -1)
    redis.call('HINCRBY', tkey, 'dropped', over)
  end
end
-- A reply's delivery status in its conversation (the newest message of that id); the message
-- after, or nil when it was dropped. Our own JSON: "id" and "status" written by Python.
local function set_status(mkey, id, status, suffix)
  local items = redis.call('LRANGE', mkey, 0, -1)
  local needle = '"id":"' .. id .. '"'
  for i = #items, 1, -1 do
    if string.find(items[i], needle, 1, true) then
      local updated = string.gsub(items[i], '"status":"%a+"', '"status":"' .. status .. '"' .. suffix, 1)
      redis.call('LSET', mkey, i - 1, updated)
      return updated
    end
  end
  return nil
end
-- A ticket as a seat is sent it: doc, status, agent, history, conversation, messages dropped,
-- then its merge links (主单 + 子单): parent, confirmed, children (ids separated by spaces).
local function ticket_payload(tkey, hkey)
  local fields = redis.call('HMGET', tkey, 'doc', 'status', 'agent', 'dropped', 'parent', 'confirmed', 'children')
  return {fields[1], fields[2], fields[3] or '', redis.call('LRANGE', hkey, 0, -1),
    redis.call('LRANGE', tkey .. ':m', 0, -1), fields[4] or '0', fields[5] or '', fields[6] or '', fields[7] or ''}
end
local function is_open(status)
  return status == 'queued' or status == 'offered' or status == 'claimed'
end
"""

# KEYS: idem, ticket, history, stream, the ticket-created stream, the ticket's conversation list,
#       then the citizen's index of each of their identities (`hg:citizen:{identity}`)
# ARGV: ticket id, doc, history entry, idem ttl, max queue length, wake channel, queue, group,
#       request fingerprint ('' = none: the gateway's own tickets, whose repeats may differ),
#       created stream's approximate MAXLEN, channel, conversation key ('' = the channel has
#       none), the message's time (ms), conversation window (ms), the first message (JSON),
#       the ticket's score in its citizen's index (received, ms with a fraction), history window
#       (ms), history max tickets
# A message channel's ticket becomes the citizen's open conversation (the JOIN script appends
# their follow-ups to it; SETTLE ends it), its first message the conversation's first.
# The ticket joins its citizen's index under each identity (历史工单, 一人多诉, 重复来电): trimmed to
# the window before now and to the newest max tickets, expiring a window after their last one.
# The created entry is written in the same step as the ticket: a consumer (triage, the wallboard)
# never sees a ticket that is not stored, nor misses one that is.
# The idempotency key holds the ticket id, then a space and the fingerprint when there is one.
# Returns {1, id} created, {0, id} already there (a repeat of this very attempt finds its own id),
# {-1, ''} queue full, {2, ''} the key was used for a request with another fingerprint.
INTAKE = (
    _PRELUDE
    + r"""
local existing = redis.call('GET', KEYS[1])
if existing then
  local tid, digest = string.match(existing, '^(%S+) ?(%S*)$')
  if ARGV[9] ~= '' and digest ~= '' and digest ~= ARGV[9] then return {2, ''} end
  return {0, tid}
end
if redis.call('XLEN', KEYS[4]) >= tonumber(ARGV[5]) then return {-1, ''} end
local entry = redis.call('XADD', KEYS[4], '*', 't', ARGV[1])
ensure_group(KEYS[4], ARGV[8])
redis.call('HSET', KEYS[2], 'doc', ARGV[2], 'status', 'queued', 'agent', '',
  'stream', KEYS[4], 'entry', entry, 'conv', ARGV[12])
redis.call('RPUSH', KEYS[3], ARGV[3])
if ARGV[12] ~= '' then
  redis.call('SET', ARGV[12], ARGV[1] .. ' ' .. ARGV[13], 'PX', tonumber(ARGV[14]))
  redis.call('RPUSH', KEYS[6], ARGV[15])
end
local window, newest = tonumber(ARGV[17]), tonumber(ARGV[18])
local cutoff = now_ms() - window
for i = 7, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[16], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. cutoff)
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(newest + 1))
  redis.call('PEXPIRE', KEYS[i], window)
end
local remembered = ARGV[1]
if ARGV[9] ~= '' then remembered = remembered .. ' ' .. ARGV[9] end
redis.call('SET', KEYS[1], remembered, 'EX', tonumber(ARGV[4]))
redis.call('PUBLISH', ARGV[6], ARGV[7])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', tonumber(ARGV[10]), '*', 't', ARGV[1], 'q', ARGV[7], 'c', ARGV[11])
return {1, ARGV[1]}
"""
)

# A citizen's follow-up joins their open ticket, once.
# KEYS: the conversation key, then the message's idempotency keys (the one it is remembered under
#       first; then older ones it may have been remembered under: see gateway/channels/contract.py)
# ARGV: key prefix, the message (JSON), its time (ms), conversation window (ms), max messages,
#       history entry, idem ttl, the citizen's follow-up key ('' = none), follow-up timeout (ms),
#       the said stream ('' = triage off: see TicketQueue.tell_said) and its MAXLEN
# Returns {'duplicate', ticket id} when the message was taken before (joined, a ticket of its own
# or a follow-up's answer), {'followup', ticket id} when it answers that ticket's 回访 question
# (asked within the timeout of the message's time: the caller records it, FOLLOWUP), {'none'}
# when there is no open conversation to join (the caller files a new ticket), else
# {'joined', ticket id, status, agent}. Beyond max messages the oldest are dropped and counted.
JOIN = (
    _PRELUDE
    + r"""
for i = 2, #KEYS do
  local existing = redis.call('GET', KEYS[i])
  if existing then return {'duplicate', string.match(existing, '^(%S+)')} end
end
if ARGV[8] ~= '' then
  local asked = redis.call('GET', ARGV[8])
  local ftid, at = string.match(asked or '', '^(%S+) (%d+)$')
  if ftid and tonumber(ARGV[3]) - tonumber(at) <= tonumber(ARGV[9]) then return {'followup', ftid} end
end
local current = redis.call('GET', KEYS[1])
if not current then return {'none'} end
local tid, last = string.match(current, '^(%S+) (%d+)$')
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
if not tid or now - tonumber(last) > window then return {'none'} end
local tkey = ARGV[1] .. ':t:' .. tid
local status, agent = unpack(redis.call('HMGET', tkey, 'status', 'agent'))
if status ~= 'queued' and status ~= 'offered' and status ~= 'claimed' then return {'none'} end
append_message(tkey, ARGV[2], ARGV[5])
redis.call('RPUSH', tkey .. ':h', ARGV[6])
redis.call('SET', KEYS[2], tid, 'EX', tonumber(ARGV[7]))
redis.call('SET', KEYS[1], tid .. ' ' .. ARGV[3], 'PX', window)
if ARGV[10] ~= '' then
  redis.call('XADD', ARGV[10], 'MAXLEN', '~', tonumber(ARGV[11]), '*', 't', tid, 's', 'message')
end
return {'joined', tid, status, agent or ''}
"""
)

# An agent's reply into its channel's outbox, refused (never trimmed) when the outbox is full.
# KEYS: the channel's outbox stream, the ticket, its history
# ARGV: outbox max, history entry, max messages, the reply as a conversation message (JSON, its
#       id "0-0": the entry id replaces it), then the entry's field/value pairs
# Returns the entry id (the reply's id), or false when the outbox holds `outbox max` replies not
# yet submitted (the sender deletes each entry once it is submitted or failed for good).
REPLY = (
    _PRELUDE
    + r"""
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
redis.call('RPUSH', KEYS[3], ARGV[2])
append_message(KEYS[2], (string.gsub(ARGV[4], '"id":"0%-0"', '"id":"' .. id .. '"', 1)), ARGV[3])
return id
"""
)

# A reply the peer took (or refused for good): its state recorded once, its outbox entry done.
# KEYS: the reply's hash, the ticket, its history, the outbox stream, then one receipt key per
#       part (the peer's message id -> the reply id)
# ARGV: sender group, entry id (= reply id), ticket id, part count, ttl, history entry, state
#       (sent | failed), reason suffix ('' or ',"reason":"..."')
# Returns {'recorded'} when it was recorded before (a restart between the record and the ack),
# else {'ok', the conversation message after ('' when dropped), the holding agent}.
SENT = (
    _PRELUDE
    + r"""
local function done()
  redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[4], ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  done()
  return {'recorded'}
end
local ttl = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'ticket', ARGV[3], 'parts', ARGV[4], 'delivered', 0, 'state', ARGV[7])
redis.call('EXPIRE', KEYS[1], ttl)
for i = 5, #KEYS do redis.call('SET', KEYS[i], ARGV[2], 'EX', ttl) end
local updated = set_status(KEYS[2] .. ':m', ARGV[2], ARGV[7], ARGV[8])
redis.call('RPUSH', KEYS[3], ARGV[6])
done()
return {'ok', updated or '', redis.call('HGET', KEYS[2], 'agent') or ''}
"""
)

# A receipt on one part of a reply: delivered once every part is, failed at the first failure.
# KEYS: the reply's hash, the ticket, its history
# ARGV: reply id, outcome (delivered | failed), reason suffix, history entry
# Returns {'ok', the conversation message after, the holding agent}, or {'partial'} (parts still
# to come), {'settled'} (already delivered or failed), {'unknown'} (no such reply: expired).
RECEIPT = (
    _PRELUDE
    + r"""
local state, parts = unpack(redis.call('HMGET', KEYS[1], 'state', 'parts'))
if not state then return {'unknown'} end
if state ~= 'sent' then return {'settled'} end
if ARGV[2] == 'delivered' and redis.call('HINCRBY', KEYS[1], 'delivered', 1) < tonumber(parts) then
  return {'partial'}
end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
local updated = set_status(KEYS[2] .. ':m', ARGV[1], ARGV[2], ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[4])
return {'ok', updated or '', redis.call('HGET', KEYS[2], 'agent') or ''}
"""
)

# KEYS: offers zset, agent's ticket set
# ARGV: agent, group, offer timeout ms, history entry, key prefix, max priority, queue 1..n
# The stream keys (prefix:q:{queue}:{priority}) are built here rather than passed in: an agent's
# 3 queues x 10 priorities would be 30 keys to encode and send on every offer.
OFFER = (
    _PRELUDE
    + r"""
local agent, group, prefix = ARGV[1], ARGV[2], ARGV[5]
local function last_delivered(stream)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then return nil end
  for _, g in ipairs(groups) do
    local name, last = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then return last end
  end
  return nil
end
-- The oldest entry this stream could offer: a returned one (owned by _pool) or the next new one.
local function candidate(stream)
  if redis.call('XLEN', stream) == 0 then return nil end
  local pooled = redis.call('XPENDING', stream, group, '-', '+', 1, '_pool')
  if #pooled > 0 then return pooled[1][1], true end
  local last = last_delivered(stream)
  if not last then
    ensure_group(stream, group)
    last = '0-0'
  end
  local nxt = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
  if #nxt > 0 then return nxt[1][1], false end
  return nil
end
-- Highest priority first; within it, the oldest entry across the agent's queues.
local function best()
  for prio = tonumber(ARGV[6]), 0, -1 do
    local best_stream, best_id, best_pooled = nil, nil, false
    for i = 7, #ARGV do
      local stream = prefix .. ':q:' .. ARGV[i] .. ':' .. prio
      local id, pooled = candidate(stream)
      if id and (not best_id or id_less(id, best_id)) then
        best_stream, best_id, best_pooled = stream, id, pooled
      end
    end
    if best_id then return best_stream, best_id, best_pooled end
  end
  return nil
end
for attempt = 1, 16 do
  local best_stream, best_id, best_pooled = best()
  if not best_id then return false end
  local claimed
  if best_pooled then
    claimed = redis.call('XCLAIM', best_stream, group, agent, 0, best_id)
  else
    local read = redis.call('XREADGROUP', 'GROUP', group, agent, 'COUNT', 1, 'STREAMS', best_stream, '>')
    claimed = read and read[1][2] or {}
  end
  local item = claimed[1]
  if item and item[2] then
    local tid = item[2][2]
    local tkey = prefix .. ':t:' .. tid
    if redis.call('HGET', tkey, 'status') == 'queued' then
      redis.call('HSET', tkey, 'status', 'offered', 'agent', agent)
      redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[3]), tid)
      redis.call('SADD', KEYS[2], tid)
      redis.call('RPUSH', tkey .. ':h', ARGV[4])
      local payload = ticket_payload(tkey, tkey .. ':h')
      table.insert(payload, 1, tid)
      return payload
    end
  end
  -- A stale entry (its ticket gone or settled): drop it and look again.
  redis.call('XACK', best_stream, group, best_id)
  redis.call('XDEL', best_stream, best_id)
end
return false
"""
)

# KEYS: ticket, history, offers zset, today's stats hash
# ARGV: agent, history entry, stats ttl, then "queue=service level ms,max wait ms" for each queue
# The wait counted is from the ticket's stream entry (when it first joined its queue) to now, so a
# ticket that went back to its queue keeps counting from its first place.
ACCEPT = (
    _PRELUDE
    + r"""
local status, owner, stream, entry = unpack(redis.call('HMGET', KEYS[1], 'status', 'agent', 'stream', 'entry'))
if not status then return {'not_found', ''} end
if status ~= 'offered' or owner ~= ARGV[1] then return {'conflict', status} end
redis.call('HSET', KEYS[1], 'status', 'claimed')
local queue = queue_of(stream)
if queue and entry then
  local waited = math.max(0, now_ms() - id_parts(entry))
  local level, longest = nil, nil
  for i = 4, #ARGV do
    local name, ms, max_ms = string.match(ARGV[i], '^(.+)=(%d+),(%d+)$')
    if name == queue then level, longest = tonumber(ms), tonumber(max_ms) end
  end
  local ttl = tonumber(ARGV[3])
  count(KEYS[4], ttl, queue, 'answered', 1)
  count(KEYS[4], ttl, queue, 'wait_ms', waited)
  if level and waited <= level then count(KEYS[4], ttl, queue, 'in_service_level', 1) end
  if longest and waited > longest then count(KEYS[4], ttl, queue, 'over_max_wait', 1) end
end
redis.call('ZREM', KEYS[3], string.match(KEYS[1], ':t:(.+)$'))
redis.call('RPUSH', KEYS[2], ARGV[2])
local payload = ticket_payload(KEYS[1], KEYS[2])
table.insert(payload, 1, 'ok')
return payload
"""
)

# Give a ticket back to its queue, keeping its place (the stream entry moves to `_pool`).
# KEYS: ticket, history, offers zset
# ARGV: agent ('' = whoever holds it), allowed statuses (comma list), group, history entry,
#       wake channel, key prefix
RELEASE = (
    _PRELUDE
    + r"""
local status, owner, stream, entry =
  unpack(redis.call('HMGET', KEYS[1], 'status', 'agent', 'stream', 'entry'))
if not status then return 'not_found' end
if not string.find(',' .. ARGV[2] .. ',', ',' .. status .. ',', 1, true) then return 'conflict' end
if ARGV[1] ~= '' and owner ~= ARGV[1] then return 'conflict' end
local tid = string.match(KEYS[1], ':t:(.+)$')
redis.call('XCLAIM', stream, ARGV[3], '_pool', 0, entry)
redis.call('HSET', KEYS[1], 'status', 'queued', 'agent', '')
redis.call('ZREM', KEYS[3], tid)
redis.call('SREM', ARGV[6] .. ':agent:' .. owner .. ':tickets', tid)
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], stream)
return 'ok'
"""
)

# KEYS: ticket, history
# ARGV: agent, new doc, history entry
UPDATE = (
    _PRELUDE
    + r"""
local status, owner = unpack(redis.call('HMGET', KEYS[1], 'status', 'agent'))
if not status then return 'not_found' end
if status ~= 'claimed' or owner ~= ARGV[1] then return 'conflict' end
redis.call('HSET', KEYS[1], 'doc', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
return 'ok'
"""
)

# KEYS: ticket, history, submitted stream, offers zset, today's stats hash, conversation list
# ARGV: agent ('' = any, for system settlement; 'parent:{id}' = any, for a 子单 answered with its
#       主单 {id}: 'conflict' unless the ticket is still that 主单's 子单), allowed statuses,
#       final status, new doc ('' = keep),
#       history entry, publish ('1' = append the whole final ticket to the submitted stream), group,
#       submitted maxlen, ttl, key prefix, stats ttl, then the 回访 (follow-up):
#       mode ('' = none, 'check' = none unless the document names an answer: then nothing is
#       done and 'plan_followup' is answered, 'send' = the answer goes out with the question,
#       'none' = it cannot: the entry says why), its history entry, and for 'send': the outbox stream, outbox max, the
#       message (JSON, its id "0-0": the entry id replaces it), max messages, the citizen's
#       follow-up key, the follow-ups sorted set, the time asked (ms), the follow-up key's ttl
#       (ms), then the outbox entry's field/value pairs
# A settled ticket ends the citizen's conversation (when it is still theirs): their next message
# opens a new ticket. A follow-up is part of the same step: the answer is queued in the outbox
# (refused, the ticket left as it was, while the outbox is full: 'outbox_full') and the citizen's
# next message on that channel is read as their rating (JOIN, FOLLOWUP).
SETTLE = (
    _PRELUDE
    + r"""
local status, owner, stream, entry =
  unpack(redis.call('HMGET', KEYS[1], 'status', 'agent', 'stream', 'entry'))
if not status then return 'not_found' end
if not string.find(',' .. ARGV[2] .. ',', ',' .. status .. ',', 1, true) then return 'conflict' end
local expected = string.match(ARGV[1], '^parent:(.+)$')
if expected then
  if redis.call('HGET', KEYS[1], 'parent') ~= expected then return 'conflict' end
elseif ARGV[1] ~= '' and owner ~= ARGV[1] then return 'conflict' end
if ARGV[12] == 'send' and redis.call('XLEN', ARGV[14]) >= tonumber(ARGV[15]) then return 'outbox_full' end
if ARGV[12] == 'check' then
  -- The stored document names an answer only when it has one (defaults are left out of it).
  local current = ARGV[4] ~= '' and ARGV[4] or redis.call('HGET', KEYS[1], 'doc')
  if current and string.find(current, '"answer":"', 1, true) then return 'plan_followup' end
end
local tid = string.match(KEYS[1], ':t:(.+)$')
redis.call('XACK', stream, ARGV[7], entry)
redis.call('XDEL', stream, entry)
redis.call('ZREM', KEYS[4], tid)
redis.call('ZREM', ARGV[10] .. ':clocks', tid)  -- closed: off the supervisors' red/yellow list
redis.call('ZREM', ARGV[10] .. ':escalate', tid)  -- and no 督办 for it any more
if owner and owner ~= '' then redis.call('SREM', ARGV[10] .. ':agent:' .. owner .. ':tickets', tid) end
redis.call('HSET', KEYS[1], 'status', ARGV[3])
local conv = redis.call('HGET', KEYS[1], 'conv')
if conv and conv ~= '' then
  local current = redis.call('GET', conv)
  if current and string.match(current, '^(%S+)') == tid then redis.call('DEL', conv) end
end
count(KEYS[5], tonumber(ARGV[11]), queue_of(stream), ARGV[3], 1)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'doc', ARGV[4]) end
redis.call('RPUSH', KEYS[2], ARGV[5])
if ARGV[12] == 'send' then
  local id = redis.call('XADD', ARGV[14], '*', unpack(ARGV, 22))
  append_message(KEYS[1], (string.gsub(ARGV[16], '"id":"0%-0"', '"id":"' .. id .. '"', 1)), ARGV[17])
  redis.call('HSET', KEYS[1], 'followup', 'asked')
  redis.call('SET', ARGV[18], tid .. ' ' .. ARGV[20], 'PX', tonumber(ARGV[21]))
  redis.call('ZADD', ARGV[19], tonumber(ARGV[20]), tid)
end
if ARGV[12] == 'send' or ARGV[12] == 'none' then redis.call('RPUSH', KEYS[2], ARGV[13]) end
if ARGV[6] == '1' then
  -- The whole ticket, as the Ticket schema's JSON: the stored document (a JSON object without
  -- status, agent and history) closed with those three. Built here so the caller need not read
  -- the ticket back first.
  local doc = redis.call('HGET', KEYS[1], 'doc')
  local tail = ',"status":' .. cjson.encode(ARGV[3])
  if owner and owner ~= '' then tail = tail .. ',"agent":' .. cjson.encode(owner) end
  tail = tail .. ',"history":[' .. table.concat(redis.call('LRANGE', KEYS[2], 0, -1), ',') .. ']'
  local said = redis.call('LRANGE', KEYS[6], 0, -1)
  if #said > 0 then tail = tail .. ',"messages":[' .. table.concat(said, ',') .. ']' end
  local dropped = tonumber(redis.call('HGET', KEYS[1], 'dropped') or '0')
  if dropped > 0 then tail = tail .. ',"messages_dropped":' .. dropped end
  local parent, confirmed, children = unpack(redis.call('HMGET', KEYS[1], 'parent', 'confirmed', 'children'))
  if parent and parent ~= '' then tail = tail .. ',"parent":' .. cjson.encode(parent) end
  if confirmed == '1' then tail = tail .. ',"merge_confirmed":true' end
  if children and children ~= '' then
    local ids = {}
    for id in string.gmatch(children, '%S+') do table.insert(ids, cjson.encode(id)) end
    tail = tail .. ',"children":[' .. table.concat(ids, ',') .. ']'
  end
  tail = tail .. '}'
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', tonumber(ARGV[8]), '*', 'ticket', string.sub(doc, 1, -2) .. tail)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[9]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9]))
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[9]))
return 'ok'
"""
)

# The citizen's 回访 answer (or none in time) recorded on a submitted ticket, once; 不满意 reopens it
# (重办) to its queue, as a new entry of its stream, its keys kept again, the citizen's conversation
# its own again.
# KEYS: ticket, history, the follow-ups sorted set, then the answer's idempotency keys (none for
#       no answer: a redelivery of the answer is then a duplicate, not a new ticket)
# ARGV: ticket id, the doc read (the change is refused when it is not the doc now), the doc after,
#       history entry, the citizen's follow-up key ('' = not known), reopen ('1' or ''), the
#       reopen's history entry, the ticket's stream, group, wake channel, idem ttl, conversation
#       window (ms), the message's time (ms)
# Returns 'ok', 'duplicate' (the answer was taken before), 'closed' (no question waits on this
# ticket: answered, or recorded as no answer, before), 'changed' (the doc changed since it was read:
# read it again), 'not_found'.
FOLLOWUP = (
    _PRELUDE
    + r"""
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 'duplicate' end
end
local doc, asked, conv = unpack(redis.call('HMGET', KEYS[1], 'doc', 'followup', 'conv'))
if not doc then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'not_found'
end
if asked ~= 'asked' then return 'closed' end
if doc ~= ARGV[2] then return 'changed' end
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'followup', 'done')
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[5] ~= '' then
  local current = redis.call('GET', ARGV[5])
  if current and string.match(current, '^(%S+)') == ARGV[1] then redis.call('DEL', ARGV[5]) end
end
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', tonumber(ARGV[11])) end
redis.call('RPUSH', KEYS[2], ARGV[4])
if ARGV[6] == '1' then
  local entry = redis.call('XADD', ARGV[8], '*', 't', ARGV[1])
  ensure_group(ARGV[8], ARGV[9])
  redis.call('HSET', KEYS[1], 'status', 'queued', 'agent', '', 'stream', ARGV[8], 'entry', entry)
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[1] .. ':m')
  if conv and conv ~= '' then
    redis.call('SET', conv, ARGV[1] .. ' ' .. ARGV[13], 'PX', tonumber(ARGV[12]))
  end
  redis.call('RPUSH', KEYS[2], ARGV[7])
  redis.call('PUBLISH', ARGV[10], ARGV[8])
end
return 'ok'
"""
)

# A queued ticket joins another stream of its queue (its priority was raised): the new entry is
# its place from now on, and the old one goes (acknowledged too: a ticket given back waits pending).
# KEYS: ticket; ARGV: stream, ticket id, wake channel, group
REQUEUE = (
    _PRELUDE
    + r"""
local old_stream, old_entry = unpack(redis.call('HMGET', KEYS[1], 'stream', 'entry'))
if old_stream and old_entry then
  redis.call('XACK', old_stream, ARGV[4], old_entry)
  redis.call('XDEL', old_stream, old_entry)
end
local entry = redis.call('XADD', ARGV[1], '*', 't', ARGV[2])
ensure_group(ARGV[1], ARGV[4])
redis.call('HSET', KEYS[1], 'stream', ARGV[1], 'entry', entry)
redis.call('PUBLISH', ARGV[3], ARGV[1])
return entry
"""
)

# 主单 + 子单 (gateway/triage/merge.py), run inside the triage amend's MULTI: the ticket becomes a
# 子单 of the parent when that is still open, is no 子单 itself, has room (`max children`) and the
# ticket is neither a 子单 nor a 主单; otherwise (or without a parent) the ticket joins its bucket as
# a possible 主单. (Its citizen's index is the intake's: INTAKE.) Both tickets' links and history
# lines are written in this one step; a repeat writes no child twice.
# KEYS: ticket, history
# ARGV: ticket id, parent id ('' = none), parent's key, the ticket's history entry, the parent's
#       history entry, max children, bucket key ('' = none), bucket member, received (ms), window
#       (ms), max bucket
# Returns 'linked', 'indexed' (in its bucket) or 'alone'.
MERGE = (
    _PRELUDE
    + r"""
local at, window = tonumber(ARGV[9]), tonumber(ARGV[10])
local outcome = 'alone'
if ARGV[2] ~= '' then
  local pstatus, pparent, children = unpack(redis.call('HMGET', ARGV[3], 'status', 'parent', 'children'))
  local mine, theirs = unpack(redis.call('HMGET', KEYS[1], 'parent', 'children'))
  children = children or ''
  local count, present = 0, false
  for id in string.gmatch(children, '%S+') do
    count = count + 1
    if id == ARGV[1] then present = true end
  end
  if is_open(pstatus) and (pparent or '') == '' and (mine or '') == '' and (theirs or '') == ''
    and (present or count < tonumber(ARGV[6])) then
    if not present then
      redis.call('HSET', ARGV[3], 'children', children == '' and ARGV[1] or (children .. ' ' .. ARGV[1]))
      redis.call('RPUSH', ARGV[3] .. ':h', ARGV[5])
    end
    redis.call('HSET', KEYS[1], 'parent', ARGV[2])
    redis.call('RPUSH', KEYS[2], ARGV[4])
    outcome = 'linked'
  end
end
if outcome ~= 'linked' and ARGV[7] ~= '' then
  redis.call('ZADD', ARGV[7], at, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', ARGV[7], '-inf', '(' .. (at - window))
  redis.call('ZREMRANGEBYRANK', ARGV[7], 0, -(tonumber(ARGV[11]) + 1))
  redis.call('PEXPIRE', ARGV[7], window)
  outcome = 'indexed'
end
return outcome
"""
)

# What the merge step reads before it decides (read only): each bucket's possible 主单 received
# since a time, newest first, at most `limit` a bucket, each with its status and parent now; then
# the citizen's tickets from that time up to the ticket's own time (the intake indexes every ticket,
# later ones too: only those before it are its related), the newest `citizen limit` of each
# identity, with their status.
# KEYS: the buckets, then the citizen's keys; ARGV: bucket count, since (ms), limit, key prefix,
#       the ticket's score in the citizen's index, citizen limit
# Returns one list per bucket (member, score, status, parent, ...), then the citizen's (id, status, ...).
MERGE_LOOKUP = (
    _PRELUDE
    + r"""
local buckets, since, limit, prefix = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local out = {}
for i = 1, buckets do
  local found = {}
  local members = redis.call('ZREVRANGEBYSCORE', KEYS[i], '+inf', since, 'WITHSCORES', 'LIMIT', 0, limit)
  for j = 1, #members, 2 do
    local tid = string.match(members[j], '^(%S+)')
    local status, parent = unpack(redis.call('HMGET', prefix .. ':t:' .. tid, 'status', 'parent'))
    table.insert(found, members[j])
    table.insert(found, members[j + 1])
    table.insert(found, status or '')
    table.insert(found, parent or '')
  end
  table.insert(out, found)
end
local theirs = {}
for i = buckets + 1, #KEYS do
  for _, tid in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[i], ARGV[5], since, 'LIMIT', 0, tonumber(ARGV[6]))) do
    table.insert(theirs, tid)
    table.insert(theirs, redis.call('HGET', prefix .. ':t:' .. tid, 'status') or '')
  end
end
table.insert(out, theirs)
return out
"""
)

# An agent confirms a suggested merge: the 子单 stays under its 主单, marked confirmed.
# KEYS: the 子单, its history; ARGV: its history entry, the 主单's history entry, key prefix
# Returns 'ok' (a repeat writes nothing), 'not_merged' (no 主单), 'not_found'.
CONFIRM_MERGE = (
    _PRELUDE
    + r"""
local status, parent, confirmed = unpack(redis.call('HMGET', KEYS[1], 'status', 'parent', 'confirmed'))
if not status then return 'not_found' end
if not parent or parent == '' then return 'not_merged' end
if confirmed == '1' then return 'ok' end
redis.call('HSET', KEYS[1], 'confirmed', '1')
redis.call('RPUSH', KEYS[2], ARGV[1])
local pkey = ARGV[3] .. ':t:' .. parent
if redis.call('EXISTS', pkey) == 1 then redis.call('RPUSH', pkey .. ':h', ARGV[2]) end
return 'ok'
"""
)

# An agent splits a 子单 from its 主单: it is a ticket of its own again, the 主单 no longer answers it.
# KEYS: the 子单, its history; ARGV: its id, its history entry, the 主单's history entry, key prefix
# Returns {'ok', parent id}, {'not_merged'}, {'closed'} (answered or abandoned: too late), {'not_found'}.
SPLIT = (
    _PRELUDE
    + r"""
local status, parent = unpack(redis.call('HMGET', KEYS[1], 'status', 'parent'))
if not status then return {'not_found'} end
if not parent or parent == '' then return {'not_merged'} end
if not is_open(status) then return {'closed'} end
redis.call('HDEL', KEYS[1], 'parent', 'confirmed')
redis.call('RPUSH', KEYS[2], ARGV[2])
local pkey = ARGV[4] .. ':t:' .. parent
local children = redis.call('HGET', pkey, 'children')
if children then
  local kept = {}
  for id in string.gmatch(children, '%S+') do
    if id ~= ARGV[1] then table.insert(kept, id) end
  end
  if #kept > 0 then redis.call('HSET', pkey, 'children', table.concat(kept, ' '))
  else redis.call('HDEL', pkey, 'children') end
  redis.call('RPUSH', pkey .. ':h', ARGV[3])
end
return {'ok', parent}
"""
)

# A ticket counted into its category x place (surges, gateway/triage/surge.py): added by its time,
# the set trimmed to the window and the baseline before it; then both counts. Counting a ticket
# twice (a repeat after a crash) adds nothing: it is one member.
# KEYS: the set; ARGV: ticket id, its time (ms), window (ms), baseline (ms)
# Returns {in the window, in the baseline before it}.
SURGE = r"""
local at, window, base = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], at, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (at - window - base))
redis.call('PEXPIRE', KEYS[1], window + base)
local recent = redis.call('ZCOUNT', KEYS[1], at - window, '+inf')
local before = redis.call('ZCOUNT', KEYS[1], at - window - base, '(' .. (at - window))
return {recent, before}
"""

# 督办 (gateway/triage/escalate.py): the events an open ticket's clocks owe now, each written once
# with its history line and its entry on the escalations stream; then the ticket is scheduled again
# at its next possible event, or unscheduled when none can come. Which events a ticket was sent is
# kept beside its document, in the hash field `escalated` (keys separated by spaces: at most six,
# `resolve:reminder`...), checked and written here in the same step: two loops that read the same
# ticket, or one that runs again after a crash, write each event once. A closed or gone ticket
# writes nothing and leaves the schedule (SETTLE takes it off too; this covers a loop that read it
# open just before).
# KEYS: ticket, history, the escalations stream, the escalate sorted set
# ARGV: ticket id, next time (ms; '' = none: unscheduled), the stream's MAXLEN (~), then for each
#       event: its key, its history entry, its stream message (field `m`)
# Returns {'ok', keys written...}, {'closed'} or {'not_found'}.
ESCALATE = (
    _PRELUDE
    + r"""
local status, sent = unpack(redis.call('HMGET', KEYS[1], 'status', 'escalated'))
if not status or not is_open(status) then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {status and 'closed' or 'not_found'}
end
local out = {'ok'}
sent = ' ' .. (sent or '') .. ' '
for i = 4, #ARGV, 3 do
  if not string.find(sent, ' ' .. ARGV[i] .. ' ', 1, true) then
    sent = sent .. ARGV[i] .. ' '
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', tonumber(ARGV[3]), '*', 'm', ARGV[i + 2])
    table.insert(out, ARGV[i])
  end
end
if #out > 1 then redis.call('HSET', KEYS[1], 'escalated', string.match(sent, '^%s*(.-)%s*$')) end
if ARGV[2] == '' then redis.call('ZREM', KEYS[4], ARGV[1])
else redis.call('ZADD', KEYS[4], tonumber(ARGV[2]), ARGV[1]) end
return out
"""
)

# Take an expired lease: only if its score is still in the past (the agent did not come back).
# KEYS: leases zset; ARGV: agent
TAKE_EXPIRED_LEASE = (
    _PRELUDE
    + r"""
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= now_ms() then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
)

# The scripts a connection error may be answered by running again (once, on a fresh connection):
# those whose repeat, after an attempt that did run, leaves the same state and gives the same answer.
# - INTAKE: the idempotency key is checked first; a repeat finds its own ticket id.
# Not the others, though each checks state before it changes anything:
# - OFFER would offer a second ticket (the first stays offered until its deadline);
# - ACCEPT and SETTLE would answer `conflict` for what they just did;
# - RELEASE would answer "not released" for a ticket it released;
# - UPDATE would push a second `updated` line into the history;
# - TAKE_EXPIRED_LEASE would answer 0, and nobody would return the lapsed agent's tickets;
# - FOLLOWUP would answer 'duplicate' or 'closed' for the answer it just recorded.
# Their callers try again at their own level (the dispatcher on its next pass, a seat on its error).
# - ESCALATE would answer that it wrote nothing (what it wrote stays written once).
# MERGE_LOOKUP only reads. (MERGE, CONFIRM_MERGE, SPLIT: MERGE runs inside triage's MULTI, whose
# repeat the `triaged` guard refuses; CONFIRM_MERGE answers 'ok' again; SPLIT would answer `not_merged`.)
REPEATABLE = frozenset({"INTAKE", "MERGE_LOOKUP"})
