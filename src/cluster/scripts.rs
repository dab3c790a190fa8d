//! The Lua scripts the command thread runs in Redis (loaded once per connection with
//! `SCRIPT LOAD`, called with `EVALSHA`). Each one is atomic in Redis: no other command runs
//! between its steps, which is what orders a room's batches.

use redis::Script;

/// Applies one room's batch and publishes it.
///
/// KEYS: vars, version. ARGV: channel, node id, local version, replace_all (`0`/`1`),
/// retention in seconds (`0`: keep), number of seed pairs, then name/stored-value pairs: the
/// variables, then the seeds (declarations, written only where the room has no such name).
/// Publishes what it wrote (seeds that found a value are left out). Returns the new version.
/// The payload is the format of `codec.rs`.
const WRITE: &str = r#"
local version = redis.call('INCR', KEYS[2])
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
local n = #ARGV
local plain_end = n - 2 * (tonumber(ARGV[6]) or 0)
-- HSET in chunks: unpack() has a limit on how many values it returns.
for i = 7, plain_end, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, plain_end)))
end
local written = {}
for i = 7, plain_end, 2 do written[#written + 1] = i end
for i = plain_end + 1, n, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    written[#written + 1] = i
  end
end
if ARGV[5] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
local parts = {'S1 ', string.format('%d', version), ' ', ARGV[3], ' ', ARGV[4], ' ',
  string.format('%d', #written), '\n', #ARGV[2], ':', ARGV[2]}
for _, i in ipairs(written) do
  parts[#parts + 1] = #ARGV[i] .. ':'
  parts[#parts + 1] = ARGV[i]
  parts[#parts + 1] = #ARGV[i + 1] .. ':'
  parts[#parts + 1] = ARGV[i + 1]
end
redis.call('PUBLISH', ARGV[1], table.concat(parts))
return version
"#;

/// Reads a room: KEYS: vars, version. Returns `{version, {name, value, name, value, …}}`
/// (version 0 for a room Redis does not have).
const LOAD: &str = r#"
local version = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
return {version, redis.call('HGETALL', KEYS[1])}
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
