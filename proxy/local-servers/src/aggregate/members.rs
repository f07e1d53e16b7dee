//! Talking to members: each member reached back through the gateway as the
//! caller, its sessions opened and reopened, its answers read, its health
//! kept.

use super::*;

impl Aggregator {
    pub(super) fn url(&self, i: usize) -> String {
        let m = &self.members[i];
        format!(
            "{}{VIRTUAL_PREFIX}/{}/{}{}",
            self.base, self.name, m.server, m.path
        )
    }

    pub(super) fn health(&self, i: usize, result: Result<(), &str>) {
        let key = (self.name.clone(), self.members[i].server.clone());
        let mut h = lock(&registry().health);
        let e = h.entry(key).or_default();
        match result {
            Ok(()) => e.healthy = true,
            Err(why) => {
                e.healthy = false;
                e.failures += 1;
                e.last_error = Some(loggable(why));
                e.last_error_at = Some(SystemTime::now());
            }
        }
    }

    pub(super) fn failed(&self, i: usize, what: &str, why: &str) {
        tracing::warn!(server = %self.name, member = %self.members[i].server, "virtual server member: {what}: {}", loggable(why));
        crate::metrics::member_failures()
            .with_label_values(&[&self.name, &self.members[i].server, what])
            .inc();
        self.health(i, Err(why));
    }

    /// A request to member `i`'s route, on its session (`leg`), as the
    /// caller: the aggregator's secret, the principal's digest (the member
    /// leg checks it authenticates the same one), the caller's credentials.
    pub(super) fn to_member(
        &self,
        method: reqwest::Method,
        i: usize,
        leg: Option<&MemberSession>,
        caller: &CallerCredentials,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .client
            .request(method, self.url(i))
            .header(SECRET_HEADER, &self.inner_secret)
            .header(OWNER_HEADER, &caller.owner);
        for (k, v) in &caller.headers {
            rb = rb.header(k, v);
        }
        if let Some(l) = leg {
            if let Some(s) = &l.sid {
                rb = rb.header("mcp-session-id", s);
            }
            if !l.version.is_empty() {
                rb = rb.header("mcp-protocol-version", &l.version);
            }
        }
        rb
    }

    /// A POST to member `i` on its session (`leg`), as the caller.
    pub(super) async fn post(
        &self,
        i: usize,
        leg: Option<&MemberSession>,
        caller: &CallerCredentials,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, String> {
        let rb = self
            .to_member(reqwest::Method::POST, i, leg, caller)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        rb.body(body).send().await.map_err(|e| {
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                s = format!("{s}: {src}");
            }
            s
        })
    }

    /// A request of the aggregator's own to member `i` and the member's
    /// answer to it (read whole, JSON or SSE; what else the member says
    /// meanwhile is dropped), within the member's read timeout; `Null` for
    /// a 202.
    pub(super) async fn exchange(
        &self,
        i: usize,
        leg: Option<&MemberSession>,
        caller: &CallerCredentials,
        body: Vec<u8>,
        id: &Value,
    ) -> Result<(Value, Option<String>), Failure> {
        let work = async {
            let resp = self
                .post(i, leg, caller, body)
                .await
                .map_err(Failure::Broken)?;
            let sid = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((Self::answer(resp, id).await?, sid))
        };
        match tokio::time::timeout(self.timeouts[i], work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Broken(format!(
                "no answer within {:?}",
                self.timeouts[i]
            ))),
        }
    }

    pub(super) async fn answer(resp: reqwest::Response, id: &Value) -> Result<Value, Failure> {
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Failure::Gone);
        }
        if status == StatusCode::ACCEPTED {
            return Ok(Value::Null);
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            let b = resp
                .bytes()
                .await
                .map_err(|e| Failure::Broken(e.to_string()))?;
            return match serde_json::from_slice::<Value>(&b) {
                Ok(v) if v.get("jsonrpc").is_some() => Ok(v),
                _ => Err(Failure::Broken(format!("HTTP {status}"))),
            };
        }
        let mut body = MemberStream::new(resp);
        loop {
            let messages = body
                .next()
                .await
                .map_err(|e| Failure::Broken(format!("no answer: {e}")))?;
            if let Some(v) = messages
                .into_iter()
                .find(|v| is_response(v) && v.get("id") == Some(id))
            {
                return Ok(v);
            }
        }
    }

    /// Opens member `i`'s session with the client's `initialize` params.
    pub(super) async fn open(
        &self,
        i: usize,
        init: &RawValue,
        caller: &CallerCredentials,
    ) -> Result<(MemberSession, Value), Asked> {
        let id = json!("warden-virtual-init");
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":"warden-virtual-init","method":"initialize","params":{}}}"#,
            init.get()
        );
        let (v, sid) = match self.exchange(i, None, caller, body.into_bytes(), &id).await {
            Ok(x) => x,
            Err(Failure::Gone) => return Err(Asked::Broken("HTTP 404".into())),
            Err(Failure::Broken(why)) => return Err(Asked::Broken(why)),
        };
        let Some(result) = v.get("result") else {
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no result");
            // Refused for this caller (policy, a quota …): not the member's health.
            return Err(Asked::Refused(format!("initialize: {}", loggable(msg))));
        };
        let leg = MemberSession {
            sid,
            version: result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            failed: None,
        };
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec();
        let _ = self
            .exchange(i, Some(&leg), caller, note, &Value::Null)
            .await;
        Ok((leg, result.clone()))
    }

    /// Member `i`'s session, opened again when it is gone (or never
    /// opened); `stale` is the session id the caller found dead.
    pub(super) async fn reopen(
        &self,
        s: &VSession,
        i: usize,
        stale: Option<&str>,
        caller: &CallerCredentials,
    ) -> Result<MemberSession, String> {
        let mut leg = s.legs[i].lock().await;
        if leg.sid.is_some() && leg.sid.as_deref() != stale && leg.failed.is_none() {
            return Ok(leg.clone()); // someone else already did
        }
        match self.open(i, &s.init, caller).await {
            Ok((l, _)) => {
                self.health(i, Ok(()));
                tracing::info!(server = %self.name, member = %self.members[i].server, "virtual server member session opened again");
                *leg = l;
                Ok(leg.clone())
            }
            Err(e) => {
                self.setback(i, "reinitialize", &e);
                let why = e.text().to_owned();
                leg.sid = None;
                leg.failed = Some(why.clone());
                Err(why)
            }
        }
    }

    /// Member `i`'s session, opening it if it failed before.
    pub(super) async fn leg(
        &self,
        s: &VSession,
        i: usize,
        caller: &CallerCredentials,
    ) -> Result<MemberSession, String> {
        let leg = s.legs[i].lock().await.clone();
        if leg.failed.is_none() {
            return Ok(leg);
        }
        self.reopen(s, i, None, caller).await
    }

    /// A request of the aggregator's own to member `i` (a list page):
    /// its result, opening the session again once if it is gone.
    pub(super) async fn ask_member(
        &self,
        s: &VSession,
        i: usize,
        caller: &CallerCredentials,
        method: &str,
        params: Value,
    ) -> Result<Value, Asked> {
        let id = json!(s.next.fetch_add(1, Ordering::Relaxed));
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        let mut leg = self.leg(s, i, caller).await.map_err(Asked::Broken)?;
        for attempt in 0..2 {
            match self
                .exchange(i, Some(&leg), caller, body.clone().into_bytes(), &id)
                .await
            {
                Ok((v, _)) => {
                    if let Some(e) = v.get("error") {
                        // The member (or its leg: policy, a quota) said no:
                        // this caller's answer, not the member's health.
                        let msg = e.get("message").and_then(Value::as_str).unwrap_or("error");
                        return Err(Asked::Refused(format!("{method}: {}", loggable(msg))));
                    }
                    return v
                        .get("result")
                        .cloned()
                        .ok_or_else(|| Asked::Broken(format!("{method}: no result")));
                }
                Err(Failure::Gone) if attempt == 0 => {
                    leg = self
                        .reopen(s, i, leg.sid.as_deref(), caller)
                        .await
                        .map_err(Asked::Broken)?;
                }
                Err(Failure::Gone) => {
                    return Err(Asked::Broken("the member's session is gone".into()))
                }
                Err(Failure::Broken(why)) => return Err(Asked::Broken(why)),
            }
        }
        Err(Asked::Broken("the member's session is gone".into()))
    }

    /// A request of the aggregator's own that did not succeed: counted
    /// against the member's health only when the member failed (not when
    /// it, or its leg, refused this caller).
    pub(super) fn setback(&self, i: usize, what: &str, e: &Asked) {
        match e {
            Asked::Broken(why) => self.failed(i, what, why),
            Asked::Refused(why) => {
                tracing::debug!(server = %self.name, member = %self.members[i].server, "virtual server member refused {what}: {why}")
            }
        }
    }
}
