//! Live traffic by principal, for `/top` on the admin listener (and `warden
//! top`). Metrics carry no principal label (unbounded cardinality); this
//! keeps a bounded table of request counts per principal id instead: the
//! least recently seen ids fall out first when it is full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Live {
    /// (tenant, principal) → requests: the same id in two tenants is two
    /// callers. Counted on every request message: keyed by a seeded fast
    /// hash, not SipHash (the ids are authenticated principals', and a
    /// collision costs a probe, never a count).
    principals:
        moka::sync::Cache<(Arc<str>, Arc<str>), Arc<AtomicU64>, foldhash::fast::RandomState>,
    /// (tenant, principal) → behaviour signals its calls raised
    /// (`anomaly`), bounded as `principals`.
    anomalies: moka::sync::Cache<String, Arc<AtomicU64>, foldhash::fast::RandomState>,
}

impl Live {
    /// Principals counted now.
    pub fn len(&self) -> u64 {
        self.principals.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn new(capacity: u64) -> Live {
        Live {
            principals: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            anomalies: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// One request message from `principal` of `tenant` (the audit
    /// record's interned strings: no allocation per request).
    pub fn count(&self, tenant: &Arc<str>, principal: &Arc<str>) {
        self.principals
            .get_with((tenant.clone(), principal.clone()), || {
                Arc::new(AtomicU64::new(0))
            })
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `n` behaviour signals raised on a call of `principal` of `tenant`.
    pub fn anomaly(&self, tenant: &str, principal: &str, n: u64) {
        self.anomalies
            .get_with(format!("{tenant}/{principal}"), || {
                Arc::new(AtomicU64::new(0))
            })
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The signals raised on calls of `who` (`tenant/principal`) since it
    /// was first seen.
    pub fn anomalies_of(&self, who: &str) -> u64 {
        self.anomalies
            .get(who)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// `(tenant/principal, requests since it was first seen)`, most first.
    pub fn principals(&self, limit: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .principals
            .iter()
            .map(|(k, v)| (format!("{}/{}", k.0, k.1), v.load(Ordering::Relaxed)))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_principal_most_first() {
        let live = Live::new(100);
        let s = |t: &str| -> Arc<str> { t.into() };
        for _ in 0..3 {
            live.count(&s("acme"), &s("bob"));
        }
        live.count(&s("acme"), &s("alice"));
        live.count(&s("globex"), &s("alice"));
        assert_eq!(
            live.principals(10),
            [
                ("acme/bob".to_owned(), 3),
                ("acme/alice".to_owned(), 1),
                ("globex/alice".to_owned(), 1)
            ]
        );
        assert_eq!(live.principals(1).len(), 1);
        live.anomaly("acme", "bob", 2);
        live.anomaly("acme", "bob", 1);
        assert_eq!(live.anomalies_of("acme/bob"), 3);
        assert_eq!(live.anomalies_of("acme/alice"), 0);
    }
}
