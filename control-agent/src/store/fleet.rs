//! The fleet view: gateways' reports (revision, labels, traffic figures)
//! and what the agent shows of them.

use super::*;

impl Store {
    /// Takes a gateway's report: refused when it is not one a gateway
    /// writes, or when it names a new gateway while the fleet table is
    /// full (members not heard from for ten stale periods are forgotten).
    pub fn report(&self, r: Report) -> Result<(), String> {
        if r.id.is_empty() || r.id.len() > 128 || !r.id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a gateway id is 1-128 visible ASCII characters".into());
        }
        Selector(r.labels.clone()).check()?;
        r.stats.check()?;
        if r.upstreams.len() > MAX_REPORTED_UPSTREAMS
            || r.upstreams
                .iter()
                .any(|u| u.server.is_empty() || u.server.len() > 256 || u.healthy > u.replicas)
        {
            return Err(format!(
                "upstreams: at most {MAX_REPORTED_UPSTREAMS}, each named (1-256 bytes) with healthy <= replicas"
            ));
        }
        let mut inner = self.lock();
        if !inner.fleet.contains_key(&r.id) && inner.fleet.len() >= MAX_FLEET {
            let forget = self.stale_after * 10;
            inner.fleet.retain(|_, m| m.seen.elapsed() <= forget);
            if inner.fleet.len() >= MAX_FLEET {
                return Err(format!("the fleet table holds {MAX_FLEET} gateways"));
            }
        }
        let now = Instant::now();
        let rate = match inner.fleet.get(&r.id) {
            Some(m) if r.stats.calls >= m.report.stats.calls => {
                let secs = now.duration_since(m.seen).as_secs_f64();
                if secs > 0.0 {
                    (r.stats.calls - m.report.stats.calls) as f64 / secs
                } else {
                    m.rate
                }
            }
            _ => 0.0,
        };
        inner.fleet.insert(
            r.id.clone(),
            Member {
                report: r,
                seen: now,
                rate,
            },
        );
        Ok(())
    }

    /// The fleet as JSON: who runs what and why, who is stale.
    pub fn fleet(&self) -> serde_json::Value {
        let current = self.current().map(|p| p.revision.clone());
        let inner = self.lock();
        let members: Vec<serde_json::Value> = inner
            .fleet
            .values()
            .map(|m| {
                let age = m.seen.elapsed();
                let due = Self::pick_for(&inner.served, &m.report.id, &m.report.labels);
                serde_json::json!({
                    "id": m.report.id,
                    "labels": m.report.labels,
                    "revision": m.report.revision,
                    "due": due.as_ref().map(|p| p.revision.clone()),
                    "why": due.as_ref().map(|p| p.target.why()),
                    "current": due.as_ref().map(|p| &p.revision) == Some(&m.report.revision),
                    "healthy": m.report.healthy,
                    "last_error": m.report.last_error,
                    "calls": m.report.stats.calls,
                    "calls_per_sec": m.rate,
                    "upstreams": m.report.upstreams,
                    "last_seen_secs": age.as_secs_f64(),
                    "stale": age > self.stale_after,
                })
            })
            .collect();
        let served: Vec<serde_json::Value> = inner
            .served
            .iter()
            .map(|p| serde_json::json!({"revision": p.revision, "target": p.target, "why": p.target.why()}))
            .collect();
        serde_json::json!({
            "current": current,
            "served": served,
            "rollout": inner.rollout.as_ref().map(|r| serde_json::json!({"revision": r.revision, "state": r.state})),
            "last_build_error": inner.last_error,
            "kill_switch": inner.kill,
            "members": members,
        })
    }

    /// What gateways report of `servers`' upstreams, and nothing else.
    pub fn upstream_health(&self, servers: &BTreeSet<String>) -> Vec<serde_json::Value> {
        let inner = self.lock();
        let mut out = Vec::new();
        for m in inner.fleet.values() {
            for u in m
                .report
                .upstreams
                .iter()
                .filter(|u| servers.contains(&u.server))
            {
                out.push(serde_json::json!({
                    "gateway": m.report.id,
                    "server": u.server,
                    "replicas": u.replicas,
                    "healthy": u.healthy,
                    "stale": m.seen.elapsed() > self.stale_after,
                }));
            }
        }
        out
    }
}
