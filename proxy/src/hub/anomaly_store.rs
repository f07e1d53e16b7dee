//! The fleet's first-use facts (`anomaly:` with `redis:`): the servers,
//! tools and hosts each principal was seen using, shared through the
//! store global quotas use, so that a tool first used through one gateway
//! is known to the others. Per principal, three Redis sets of hex hashes
//! (`<prefix>anomaly:<principal digest>:s|t|h`), each capped as a
//! baseline's set is and expiring `anomaly.fleet_ttl` after it was last
//! added to. A gateway asks only about the facts its own baseline does not
//! hold; when the store does not answer, its own baseline decides (a fact
//! it does not hold is new).

use sha2::{Digest, Sha256};
use warden_filters::engines::anomaly::{Facts, MAX_HOSTS, MAX_SERVERS, MAX_TOOLS};

use crate::hub::quota_store::QuotaStore;

/// Adds ARGV[3..] to the set KEYS[1] while it holds fewer than ARGV[1]
/// members; the set expires ARGV[2] seconds on.
const FACTS_ADD: &str = r#"
local n = redis.call('SCARD', KEYS[1])
local cap = tonumber(ARGV[1])
for i = 3, #ARGV do
  if n >= cap then break end
  n = n + redis.call('SADD', KEYS[1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return n
"#;

static ADD: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(FACTS_ADD));

fn keys(store: &QuotaStore, owner: &str) -> [String; 3] {
    let d = hex::encode(&Sha256::digest(owner.as_bytes())[..16]);
    let p = &store.cfg.prefix;
    [
        format!("{p}anomaly:{d}:s"),
        format!("{p}anomaly:{d}:t"),
        format!("{p}anomaly:{d}:h"),
    ]
}

fn member(h: u64) -> String {
    format!("{h:016x}")
}

/// Which of `facts` (the ones this gateway does not know) the fleet knows
/// for the principal keyed `owner`.
pub async fn known(store: &QuotaStore, owner: &str, facts: &Facts) -> Result<Facts, String> {
    let mut conn = store.conn_or_err().await?;
    let [s, t, h] = keys(store, owner);
    let mut pipe = redis::pipe();
    let mut asked = Vec::new();
    if facts.server != 0 {
        pipe.sismember(&s, member(facts.server));
        asked.push((0u8, facts.server));
    }
    if facts.tool != 0 {
        pipe.sismember(&t, member(facts.tool));
        asked.push((1, facts.tool));
    }
    for x in &facts.hosts {
        pipe.sismember(&h, member(*x));
        asked.push((2, *x));
    }
    if asked.is_empty() {
        return Ok(Facts::default());
    }
    let got: Vec<bool> = store
        .bounded(pipe.query_async(&mut conn))
        .await
        .map_err(|e| format!("anomaly facts: {e}"))?;
    let mut out = Facts::default();
    for ((kind, x), yes) in asked.into_iter().zip(got) {
        if !yes {
            continue;
        }
        match kind {
            0 => out.server = x,
            1 => out.tool = x,
            _ => out.hosts.push(x),
        }
    }
    Ok(out)
}

/// Adds `facts` (what a forwarded call taught this gateway) to the
/// fleet's sets of the principal keyed `owner`.
pub async fn add(
    store: &QuotaStore,
    owner: &str,
    facts: &Facts,
    ttl: std::time::Duration,
) -> Result<(), String> {
    let mut conn = store.conn_or_err().await?;
    let [s, t, h] = keys(store, owner);
    let ttl = ttl.as_secs().max(1);
    let sets: [(&String, usize, Vec<u64>); 3] = [
        (&s, MAX_SERVERS, vec![facts.server]),
        (&t, MAX_TOOLS, vec![facts.tool]),
        (&h, MAX_HOSTS, facts.hosts.clone()),
    ];
    for (key, cap, members) in sets {
        let members: Vec<String> = members
            .into_iter()
            .filter(|x| *x != 0)
            .map(member)
            .collect();
        if members.is_empty() {
            continue;
        }
        let mut inv = ADD.key(key);
        inv.arg(cap).arg(ttl);
        for m in &members {
            inv.arg(m);
        }
        let res: Result<i64, _> = store.bounded(inv.invoke_async(&mut conn)).await;
        res.map_err(|e| format!("anomaly facts: {e}"))?;
    }
    Ok(())
}
