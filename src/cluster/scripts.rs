//! The Lua scripts the command thread runs in Redis (loaded once per connection with
//! `SCRIPT LOAD`, called with `EVALSHA`). Each one is atomic in Redis: no other command runs
//! between its steps, which is what orders a room's batches.

use redis::Script;

/// Applies one room's batch, stores its history entries and publishes it.
///
/// KEYS: vars, meta, version, history. ARGV: channel, node id, local version, replace_all
/// (`0`/`1`), retention in seconds (`0`: keep), number of seed triples, `--history` (the cap of
/// the history list; `0` leaves it alone), number of history entries, then name/stored-value/
/// meta triples: the variables, then the seeds (declarations, written only where the room has
/// no such name), then the history entries oldest first (`engine/history_codec.rs`). The vars and meta
/// hashes are written (and, with replace_all, replaced) together; an entry is pushed at the
/// head of the list, so it is newest first, and the list is trimmed to the cap. Every key of the
/// room gets the retention. Publishes what it wrote (seeds that found a value are left out).
/// Returns the new version. The payload is the format of `codec.rs`.
const WRITE: &str = r#"
local version = redis.call('INCR', KEYS[3])
if ARGV[4] == '1' then redis.call('DEL', KEYS[1], KEYS[2]) end
local entries = tonumber(ARGV[8]) or 0
local triples_end = #ARGV - entries
local plain_end = triples_end - 3 * (tonumber(ARGV[6]) or 0)
local written = {}
-- HSET in chunks: unpack() has a limit on how many values it returns.
local values, metas = {}, {}
local function flush()
  if #values > 0 then
    redis.call('HSET', KEYS[1], unpack(values))
    redis.call('HSET', KEYS[2], unpack(metas))
    values, metas = {}, {}
  end
end
for i = 9, plain_end, 3 do
  values[#values + 1] = ARGV[i]
  values[#values + 1] = ARGV[i + 1]
  metas[#metas + 1] = ARGV[i]
  metas[#metas + 1] = ARGV[i + 2]
  written[#written + 1] = i
  if #values >= 1000 then flush() end
end
flush()
for i = plain_end + 1, triples_end, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
    written[#written + 1] = i
  end
end
local cap = tonumber(ARGV[7]) or 0
if cap > 0 and entries > 0 then
  for i = triples_end + 1, #ARGV, 1000 do
    redis.call('LPUSH', KEYS[4], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  redis.call('LTRIM', KEYS[4], 0, cap - 1)
end
if ARGV[5] ~= '0' then
  for k = 1, 4 do redis.call('EXPIRE', KEYS[k], ARGV[5]) end
end
local parts = {'S2 ', string.format('%d', version), ' ', ARGV[3], ' ', ARGV[4], ' ',
  string.format('%d', #written), '\n', #ARGV[2], ':', ARGV[2]}
for _, i in ipairs(written) do
  for j = i, i + 2 do
    parts[#parts + 1] = #ARGV[j] .. ':'
    parts[#parts + 1] = ARGV[j]
  end
end
redis.call('PUBLISH', ARGV[1], table.concat(parts))
return version
"#;

/// Reads a room: KEYS: vars, meta, version. Returns `{version, {name, value, …}, {name, meta,
/// …}}` (version 0 for a room Redis does not have). Also the variables read of the HTTP API.
const LOAD: &str = r#"
local version = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
return {version, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"#;

/// Sets this node's member count in a room and returns the room's total over live nodes.
///
/// KEYS: members. ARGV: node id, count (`0` removes the node's entry), heartbeat key prefix.
/// Entries of nodes whose heartbeat key is gone are removed on the way.
const MEMBERS: &str = r#"
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local entries = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #entries, 2 do
  if redis.call('EXISTS', ARGV[3] .. entries[i]) == 1 then
    total = total + (tonumber(entries[i + 1]) or 0)
  else
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
return total
"#;

/// A script's text and the SHA1 that `EVALSHA` names it by.
pub struct LuaScript {
    pub code: &'static str,
    pub sha: String,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        LuaScript {
            code,
            sha: Script::new(code).get_hash().to_owned(),
        }
    }
}

/// The three scripts.
pub struct Scripts {
    pub write: LuaScript,
    pub load: LuaScript,
    pub members: LuaScript,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            write: LuaScript::new(WRITE),
            load: LuaScript::new(LOAD),
            members: LuaScript::new(MEMBERS),
        }
    }

    /// Loads every script into Redis's script cache (at connect, and after `NOSCRIPT`).
    pub fn load_into(&self, connection: &mut redis::Connection) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for script in [&self.write, &self.load, &self.members] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.code);
        }
        pipe.exec(connection)
    }
}
