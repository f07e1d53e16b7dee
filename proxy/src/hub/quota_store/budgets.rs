//! Money budgets held across replicas (`budgets:` with `global: true`):
//! each holder's spend this period is one integer in the store (millionths),
//! checked and raised by one script for every budget on a call's path, so
//! two replicas never both admit the call that passes a limit.

use std::sync::LazyLock;

use super::QuotaStore;

/// For every KEYS[i]: a spend below `floor_i` (what this replica alone
/// knows was spent: a store that lost its data, or came back empty, is
/// raised to it, never read lower) is set to it; then refuse when
/// `spent + ARGV[2] > limit_i`; otherwise raise every key by ARGV[1].
/// Per key, ARGV[3i] is the limit, ARGV[3i + 1] how long to keep it (ms),
/// ARGV[3i + 2] the floor. Returns the new spends, or `{-i, spent}` for the
/// first key refused.
const RESERVE: &str = r#"
local cost = tonumber(ARGV[1])
local need = tonumber(ARGV[2])
for i = 1, #KEYS do
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  local floor = tonumber(ARGV[3 * i + 2])
  if spent < floor then
    redis.call('SET', KEYS[i], ARGV[3 * i + 2], 'PX', tonumber(ARGV[3 * i + 1]))
    spent = floor
  end
  if spent + need > tonumber(ARGV[3 * i]) then return {-i, spent} end
end
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('INCRBY', KEYS[i], cost)
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[3 * i + 1]))
end
return out
"#;

/// Raises (or with a negative ARGV[1], lowers) every KEYS[i] and keeps it
/// ARGV[1 + i] ms; returns the new spends. A spend saturates at 2^62
/// millionths (past every limit) rather than overflow: `INCRBY` refusing
/// would count the charge nowhere in the store.
const ADD: &str = r#"
local out = {}
local d = tonumber(ARGV[1])
for i = 1, #KEYS do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  if d > 0 and v + d >= 4611686018427387904 then
    redis.call('SET', KEYS[i], '4611686018427387904')
    out[i] = 4611686018427387904
  else
    out[i] = redis.call('INCRBY', KEYS[i], ARGV[1])
  end
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[1 + i]))
end
return out
"#;

static RESERVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE));
static ADD_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADD));

/// One holder's counter in the store.
pub struct BudgetKey<'a> {
    /// The holder's key (`warden_filters::guards::budget::BudgetDemand::key`).
    pub key: &'a [u8],
    /// The period's number.
    pub period: u32,
    pub limit: u64,
    /// How long the counter is kept (the period's rest and a day).
    pub keep_ms: u64,
    /// What this replica alone counted this period: the store's spend is
    /// never read lower.
    pub floor: u64,
}

/// What the store said to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// The spends after the charge, one per key.
    Taken(Vec<u64>),
    /// The key at this index would pass its limit; what it holds.
    Over(usize, u64),
}

impl QuotaStore {
    fn budget_key(&self, k: &BudgetKey<'_>) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(k.key);
        format!(
            "{}b:{}:{}",
            self.cfg.prefix,
            hex::encode(&digest[..16]),
            k.period
        )
    }

    /// Takes `cost` from every key when `need` more fits under each limit.
    pub async fn budget_reserve(
        &self,
        keys: &[BudgetKey<'_>],
        cost: u64,
        need: u64,
    ) -> Result<Reserved, String> {
        let mut conn = self.conn_or_err().await?;
        let mut inv = RESERVE_SCRIPT.prepare_invoke();
        inv.arg(cost).arg(need);
        for k in keys {
            inv.key(self.budget_key(k))
                .arg(k.limit)
                .arg(k.keep_ms)
                .arg(k.floor);
        }
        let res: Result<Vec<i64>, _> = self.bounded(inv.invoke_async(&mut conn)).await;
        match res {
            Ok(v) => match v.first() {
                Some(i) if *i < 0 => Ok(Reserved::Over(
                    (-*i - 1) as usize,
                    v.get(1).copied().unwrap_or(0).max(0) as u64,
                )),
                _ => Ok(Reserved::Taken(
                    v.into_iter().map(|n| n.max(0) as u64).collect(),
                )),
            },
            Err(e) => {
                self.set_up(false);
                Err(format!("budget reservation: {e}"))
            }
        }
    }

    /// Adds `micros` (negative: gives back) to every key; the new spends.
    pub async fn budget_add(
        &self,
        keys: &[BudgetKey<'_>],
        micros: i64,
    ) -> Result<Vec<u64>, String> {
        let mut conn = self.conn_or_err().await?;
        let mut inv = ADD_SCRIPT.prepare_invoke();
        inv.arg(micros);
        for k in keys {
            inv.key(self.budget_key(k)).arg(k.keep_ms);
        }
        let res: Result<Vec<i64>, _> = self.bounded(inv.invoke_async(&mut conn)).await;
        match res {
            Ok(v) => Ok(v.into_iter().map(|n| n.max(0) as u64).collect()),
            Err(e) => {
                self.set_up(false);
                Err(format!("budget charge: {e}"))
            }
        }
    }
}
