-- chat-engine presence: each call is one run of this script, so one atomic step.
--
-- ARGV: 1 key prefix, 2 operation, 3 now (ms), 4 lease TTL (ms), 5.. the operation's own.
-- Time is the caller's `now`, never the Redis server's clock: the nodes agree through the
-- numbers they pass, and tests drive time explicitly.
--
-- Keys (all under the prefix, which holds a hash tag, so one cluster slot holds them all):
--   <p>:leases       zset  node -> lease expiry (ms)
--   <p>:renewed      hash  node -> last renewal (ms)
--   <p>:node:<node>  hash  connection id -> user, the node's registered connections
--   <p>:user:<user>  set   "<node>/<connection id>", the user's registered connections
--   <p>:online       set   users whose last reported change was Online
--   <p>:seen         hash  user -> last seen (ms) once offline
--   <p>:pending      list  "<user> <last seen ms>": offline changes found while expiring a
--                          lease outside `sweep`, for the next sweep to report
-- Node and user ids are [A-Za-z0-9._-]+, so neither "/" nor " " occurs in them.

local P = ARGV[1]
local op = ARGV[2]
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])

local LEASES = P .. ':leases'
local RENEWED = P .. ':renewed'
local ONLINE = P .. ':online'
local SEEN = P .. ':seen'
local PENDING = P .. ':pending'

local function node_key(node) return P .. ':node:' .. node end
local function user_key(user) return P .. ':user:' .. user end
local function ms(n) return string.format('%.0f', n) end
local function node_of(member) return string.match(member, '^(.*)/[^/]*$') end

local function lease_expiry(node)
  local expires = redis.call('ZSCORE', LEASES, node)
  if expires then return tonumber(expires) end
  return nil
end

local function is_live(node)
  local expires = lease_expiry(node)
  return expires ~= nil and now < expires
end

local function has_live_conn(user)
  for _, member in ipairs(redis.call('SMEMBERS', user_key(user))) do
    if is_live(node_of(member)) then return true end
  end
  return false
end

-- Removes `node`'s lease and connections; records who went offline because of it.
local function expire(node)
  local renewed = tonumber(redis.call('HGET', RENEWED, node) or '')
  redis.call('ZREM', LEASES, node)
  redis.call('HDEL', RENEWED, node)
  local conns = redis.call('HGETALL', node_key(node))
  redis.call('DEL', node_key(node))
  local users, seen_user = {}, {}
  for i = 1, #conns, 2 do
    local user = conns[i + 1]
    redis.call('SREM', user_key(user), node .. '/' .. conns[i])
    if not seen_user[user] then
      seen_user[user] = true
      table.insert(users, user)
    end
  end
  for _, user in ipairs(users) do
    if not has_live_conn(user) and redis.call('SREM', ONLINE, user) == 1 then
      local last = renewed
      local seen = tonumber(redis.call('HGET', SEEN, user) or '')
      if seen and (not last or seen > last) then last = seen end
      if last then
        redis.call('HSET', SEEN, user, ms(last))
        redis.call('RPUSH', PENDING, user .. ' ' .. ms(last))
      else
        redis.call('RPUSH', PENDING, user .. ' -')
      end
    end
  end
end

local function expire_if_due(node)
  local expires = lease_expiry(node)
  if expires ~= nil and now >= expires then expire(node) end
end

local function renew(node)
  redis.call('ZADD', LEASES, ms(now + ttl), node)
  redis.call('HSET', RENEWED, node, ms(now))
end

if op == 'connect' then
  -- ARGV 5 node, 6 connection, 7 user. Returns 1 when the user came online.
  local node, conn, user = ARGV[5], ARGV[6], ARGV[7]
  expire_if_due(node)
  renew(node)
  local previous = redis.call('HGET', node_key(node), conn)
  redis.call('HSET', node_key(node), conn, user)
  if previous and previous ~= user then
    -- The connection id was reused for another user: the old registration is gone.
    redis.call('SREM', user_key(previous), node .. '/' .. conn)
  end
  redis.call('SADD', user_key(user), node .. '/' .. conn)
  return redis.call('SADD', ONLINE, user)

elseif op == 'disconnect' then
  -- ARGV 5 node, 6 connection, 7 user. Returns 1 when the user went offline.
  local node, conn, user = ARGV[5], ARGV[6], ARGV[7]
  expire_if_due(node)
  if lease_expiry(node) == nil then return 0 end
  if redis.call('HGET', node_key(node), conn) ~= user then return 0 end
  redis.call('HDEL', node_key(node), conn)
  if redis.call('EXISTS', node_key(node)) == 0 then
    redis.call('ZREM', LEASES, node)
    redis.call('HDEL', RENEWED, node)
  end
  redis.call('SREM', user_key(user), node .. '/' .. conn)
  if has_live_conn(user) then return 0 end
  if redis.call('SREM', ONLINE, user) == 0 then return 0 end
  redis.call('HSET', SEEN, user, ARGV[3])
  return 1

elseif op == 'renew' then
  -- ARGV 5 node. Returns 1 when the lease was live and is extended.
  local node = ARGV[5]
  expire_if_due(node)
  if lease_expiry(node) == nil then return 0 end
  renew(node)
  return 1

elseif op == 'status' then
  -- ARGV 5.. users. Returns, per user, 1 or 0 (online) and the last seen ms or -1.
  local out = {}
  for i = 5, #ARGV do
    local user = ARGV[i]
    if has_live_conn(user) then
      table.insert(out, 1)
      table.insert(out, now)
    else
      local last = tonumber(redis.call('HGET', SEEN, user) or '')
      -- Connections on expired, not yet swept nodes: seen when their node last renewed.
      for _, member in ipairs(redis.call('SMEMBERS', user_key(user))) do
        local renewed = tonumber(redis.call('HGET', RENEWED, node_of(member)) or '')
        if renewed and (not last or renewed > last) then last = renewed end
      end
      table.insert(out, 0)
      table.insert(out, last or -1)
    end
  end
  return out

elseif op == 'sweep' then
  -- Returns "<user> <last seen ms>" for each user who went offline through an expiry.
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', ARGV[3])) do
    expire(node)
  end
  local out = redis.call('LRANGE', PENDING, 0, -1)
  redis.call('DEL', PENDING)
  return out
end

return redis.error_reply('chat presence: unknown operation ' .. tostring(op))
