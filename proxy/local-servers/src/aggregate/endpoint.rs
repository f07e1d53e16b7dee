//! The endpoint: initialize fanned out, POSTed messages routed to their
//! member and relayed back, notifications and answers passed on, the merged
//! GET stream, idle sessions reaped.

use super::*;

impl Aggregator {
    /// A new session: every member's opened with the client's params.
    pub(super) async fn initialize(
        &self,
        m: &Members,
        caller: &CallerCredentials,
    ) -> Response<Body> {
        let id: Value = member(m, "id").unwrap_or(Value::Null);
        {
            let sessions = lock(&self.sessions);
            let mut opening = lock(&self.opening);
            let mine = sessions
                .values()
                .filter(|s| s.owner == caller.owner)
                .count()
                + opening.get(&caller.owner).copied().unwrap_or(0);
            let all = sessions.len() + opening.values().sum::<usize>();
            if all < MAX_SESSIONS && mine < MAX_SESSIONS_PER_PRINCIPAL {
                *opening.entry(caller.owner.clone()).or_default() += 1;
            } else {
                return too_many(
                    &id,
                    &format!(
                        "too many sessions of `{}` (end some with DELETE)",
                        self.name
                    ),
                );
            }
        }
        // Counted until the session is in the table (or failed).
        let _opening = Opening::new(self, &caller.owner);
        let init: Box<RawValue> = m.get("params").cloned().unwrap_or_else(|| raw(&json!({})));
        if init.get().len() > MAX_INIT {
            return json_response(
                StatusCode::OK,
                None,
                &error_value(
                    Some(&id),
                    -32602,
                    "Invalid params: initialize params over 64 KiB",
                ),
            );
        }
        let requested = serde_json::from_str::<Value>(init.get())
            .ok()
            .and_then(|p| {
                p.get("protocolVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        // The session's id before its members are opened: their
        // `initialize` replies (instructions a member wrote) reach the
        // client in this session, so their legs track information flow by
        // it as every later leg does (`FLOW_HEADER`, the digest the
        // gateway sends once the client names the session).
        let sid = hex::encode(rand::random::<[u8; 16]>());
        let caller = &caller.with_flow(&sid);
        let opened = futures_util::future::join_all(
            (0..self.members.len()).map(|i| self.open(i, &init, caller)),
        )
        .await;
        let mut legs = Vec::new();
        let mut results = Vec::new();
        let mut failures = Vec::new();
        for (i, r) in opened.into_iter().enumerate() {
            match r {
                Ok((leg, result)) => {
                    self.health(i, Ok(()));
                    results.push((i, result));
                    legs.push(leg);
                }
                Err(e) => {
                    self.setback(i, "initialize", &e);
                    failures.push(self.members[i].server.clone());
                    legs.push(MemberSession {
                        failed: Some(e.text().to_owned()),
                        ..MemberSession::default()
                    });
                }
            }
        }
        if results.is_empty() {
            let msg = format!(
                "no member of `{}` could be initialized ({} failed; see the gateway log)",
                self.name,
                failures.join(", ")
            );
            return json_response(StatusCode::OK, None, &error_value(Some(&id), -32603, &msg));
        }
        // The version every member agreed on, else the oldest any chose.
        let versions: Vec<&str> = results
            .iter()
            .filter_map(|(_, r)| r.get("protocolVersion").and_then(Value::as_str))
            .collect();
        let version = match requested.as_deref() {
            Some(v) if versions.iter().all(|x| *x == v) => v.to_owned(),
            _ => versions
                .iter()
                .min()
                .copied()
                .unwrap_or("2025-06-18")
                .to_owned(),
        };
        let mut caps = serde_json::Map::new();
        let any = |path: &str| results.iter().any(|(_, r)| r.pointer(path).is_some());
        let flag = |path: &str| {
            results
                .iter()
                .any(|(_, r)| r.pointer(path) == Some(&Value::Bool(true)))
        };
        if any("/capabilities/tools") {
            caps.insert(
                "tools".into(),
                json!({"listChanged": flag("/capabilities/tools/listChanged")}),
            );
        }
        if any("/capabilities/prompts") {
            caps.insert(
                "prompts".into(),
                json!({"listChanged": flag("/capabilities/prompts/listChanged")}),
            );
        }
        if any("/capabilities/resources") {
            caps.insert(
                "resources".into(),
                json!({
                    "listChanged": flag("/capabilities/resources/listChanged"),
                    "subscribe": flag("/capabilities/resources/subscribe"),
                }),
            );
        }
        if any("/capabilities/logging") {
            caps.insert("logging".into(), json!({}));
        }
        if any("/capabilities/completions") {
            caps.insert("completions".into(), json!({}));
        }
        let instructions: Vec<String> = results
            .iter()
            .filter_map(|(i, r)| {
                r.get("instructions")
                    .and_then(Value::as_str)
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| format!("## {}\n{t}", self.members[*i].server))
            })
            .collect();
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": {"name": self.name, "version": env!("CARGO_PKG_VERSION")},
        });
        if !instructions.is_empty() {
            result["instructions"] = json!(instructions.join("\n\n"));
        }
        let session = Arc::new(VSession {
            id: sid.clone(),
            owner: caller.owner.clone(),
            init,
            legs: legs.into_iter().map(tokio::sync::Mutex::new).collect(),
            learned: Mutex::new(Learned::new(self.members.len())),
            asked: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            get_stop: Mutex::new(None),
            caller: Mutex::new(caller.clone()),
            last_used: Mutex::new(Instant::now()),
        });
        lock(&self.sessions).insert(sid.clone(), session);
        json_response(
            StatusCode::OK,
            Some(&sid),
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
        )
    }

    pub(super) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let authorised = req
            .headers()
            .get(SECRET_HEADER)
            .is_some_and(|v| crate::loopback::same(v.as_bytes(), self.outer_secret.as_bytes()));
        if !authorised {
            return plain(StatusCode::FORBIDDEN);
        }
        let caller = CallerCredentials::of(&req, self.api_key.as_deref());
        let session = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|sid| lock(&self.sessions).get(sid).cloned())
            // Bound to the principal that opened it.
            .filter(|s| crate::loopback::same(s.owner.as_bytes(), caller.owner.as_bytes()));
        if let Some(s) = &session {
            *lock(&s.last_used) = Instant::now();
            *lock(&s.caller) = caller.clone();
        }
        let has_sid = req.headers().contains_key("mcp-session-id");
        match *req.method() {
            Method::POST => self.post_message(req, session, has_sid, caller).await,
            Method::GET => match session {
                Some(s) => self.get(s, caller),
                None => not_found(),
            },
            Method::DELETE => match session {
                Some(s) => {
                    lock(&self.sessions).remove(&s.id);
                    if let Some(stop) = lock(&s.get_stop).take() {
                        let _ = stop.send(true);
                    }
                    self.end(&s, &caller).await;
                    plain(StatusCode::OK)
                }
                None => not_found(),
            },
            _ => plain(StatusCode::METHOD_NOT_ALLOWED),
        }
    }

    /// Ends every member session of `s`.
    pub(super) async fn end(&self, s: &VSession, caller: &CallerCredentials) {
        let mut jobs = Vec::new();
        for i in 0..self.members.len() {
            let leg = s.legs[i].lock().await.clone();
            if leg.sid.is_none() {
                continue;
            }
            let rb = self
                .to_member(reqwest::Method::DELETE, i, Some(&leg), caller)
                .timeout(self.timeouts[i]);
            jobs.push(rb.send());
        }
        let _ = futures_util::future::join_all(jobs).await;
    }

    pub(super) async fn post_message(
        self: Arc<Self>,
        req: Request<Incoming>,
        session: Option<Arc<VSession>>,
        has_sid: bool,
        caller: CallerCredentials,
    ) -> Response<Body> {
        let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE),
        };
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(
                    None,
                    -32600,
                    "a virtual server takes one JSON-RPC message per request (no batches)",
                ),
            );
        }
        let Ok(mut m) = serde_json::from_slice::<Members>(&body) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(None, -32700, "Parse error"),
            );
        };
        let method: Option<String> = member(&m, "method");
        let id: Option<Value> = member(&m, "id");
        if id.as_ref().is_some_and(|v| v.to_string().len() > MAX_ID) {
            return json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(None, -32600, "Invalid Request: an id over 256 characters"),
            );
        }
        match (method.as_deref(), &id) {
            (Some("initialize"), Some(_)) => return self.initialize(&m, &caller).await,
            (Some("ping"), Some(id)) if session.is_some() || !has_sid => {
                return json_response(
                    StatusCode::OK,
                    None,
                    &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                );
            }
            (Some("server/discover"), Some(id)) if session.is_none() => {
                // Sessions only: a 2026-07-28 client falls back to initialize.
                return json_response(
                    StatusCode::OK,
                    None,
                    &error_value(
                        Some(id),
                        -32601,
                        "Method not found: server/discover (this virtual server speaks initialize)",
                    ),
                );
            }
            _ => {}
        }
        let Some(s) = session else {
            return if has_sid {
                not_found()
            } else {
                json_response(
                    StatusCode::BAD_REQUEST,
                    None,
                    &error_value(
                        id.as_ref(),
                        -32600,
                        "Bad Request: no valid session ID; initialize first",
                    ),
                )
            };
        };
        match (method, id) {
            (Some(method), Some(id)) => self.request(s, &mut m, &method, id, caller).await,
            (Some(method), None) => {
                self.notification(&s, &mut m, &method, &caller).await;
                plain(StatusCode::ACCEPTED)
            }
            (None, Some(id)) => {
                self.client_answer(&s, &mut m, &id, &caller).await;
                plain(StatusCode::ACCEPTED)
            }
            (None, None) => json_response(
                StatusCode::BAD_REQUEST,
                None,
                &error_value(None, -32600, "Invalid Request"),
            ),
        }
    }

    /// Sends a message the client sent on to member `i`, not waiting for
    /// more than the member's acknowledgement.
    pub(super) async fn pass_on(
        &self,
        s: &VSession,
        i: usize,
        m: &Members,
        caller: &CallerCredentials,
    ) {
        let Ok(body) = serde_json::to_vec(m) else {
            return;
        };
        let leg = s.legs[i].lock().await.clone();
        if leg.sid.is_none() {
            return;
        }
        let _ = self
            .exchange(i, Some(&leg), caller, body, &Value::Null)
            .await;
    }

    /// The client answers a server→client request: to the member that asked.
    pub(super) async fn client_answer(
        &self,
        s: &VSession,
        m: &mut Members,
        id: &Value,
        caller: &CallerCredentials,
    ) {
        let asked = id
            .as_str()
            .and_then(|t| t.strip_prefix(ASK_PREFIX))
            .and_then(|n| n.parse::<u64>().ok());
        let Some((i, original)) = asked.and_then(|b| lock(&s.asked).remove(&b)) else {
            return;
        };
        m.insert("id".into(), raw(&original));
        self.pass_on(s, i, m, caller).await;
    }

    pub(super) async fn notification(
        &self,
        s: &VSession,
        m: &mut Members,
        method: &str,
        caller: &CallerCredentials,
    ) {
        match method {
            "notifications/cancelled" => {
                let mut params: Members = member(m, "params").unwrap_or_default();
                let Some(wanted) = member::<Value>(&params, "requestId").map(|v| v.to_string())
                else {
                    return;
                };
                // Cancelled: answered by no one (its stream just ends).
                let Some((i, ours)) = lock(&s.inflight).remove(&wanted) else {
                    return;
                };
                params.insert("requestId".into(), raw(&json!(ours)));
                m.insert("params".into(), raw_members(&params));
                self.pass_on(s, i, m, caller).await;
            }
            "notifications/roots/list_changed" => {
                for i in 0..self.members.len() {
                    self.pass_on(s, i, m, caller).await;
                }
            }
            // `initialized` was sent to each member when its session opened;
            // anything else is the client's own business.
            _ => {}
        }
    }

    /// A client request: answered here (lists, logging level) or routed.
    pub(super) async fn request(
        self: Arc<Self>,
        s: Arc<VSession>,
        m: &mut Members,
        method: &str,
        id: Value,
        caller: CallerCredentials,
    ) -> Response<Body> {
        let answer = |v: &Value| json_response(StatusCode::OK, None, v);
        if let Some(kind) = ListKind::of(method) {
            let params: Option<Members> = member(m, "params");
            return answer(&self.list(&s, kind, params.as_ref(), &id, &caller).await);
        }
        let mut params: Members = member(m, "params").unwrap_or_default();
        let target = match method {
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" {
                    ListKind::Tools
                } else {
                    ListKind::Prompts
                };
                let Some(name) = member::<String>(&params, "name") else {
                    return answer(&error_value(Some(&id), -32602, "Invalid params: no name"));
                };
                let Some((i, real)) = self.resolve(&s, kind, &name, &caller).await else {
                    let what = if kind == ListKind::Tools {
                        "tool"
                    } else {
                        "prompt"
                    };
                    return answer(&error_value(
                        Some(&id),
                        -32602,
                        &format!("Unknown {what}: {}", loggable(&name)),
                    ));
                };
                params.insert("name".into(), raw(&json!(real)));
                if kind == ListKind::Tools {
                    if let Some(view) = self.members[i].tools.get(&real) {
                        if !view.hidden.is_empty() || !view.defaults.is_empty() {
                            let mut args: Members =
                                member(&params, "arguments").unwrap_or_default();
                            for (k, v) in &view.hidden {
                                if args.contains_key(k) {
                                    return answer(&error_value(
                                        Some(&id),
                                        -32602,
                                        &format!(
                                            "Invalid params: argument `{k}` is set by the gateway"
                                        ),
                                    ));
                                }
                                args.insert(k.clone(), raw(v));
                            }
                            for (k, v) in &view.defaults {
                                args.entry(k.clone()).or_insert_with(|| raw(v));
                            }
                            params.insert("arguments".into(), raw_members(&args));
                        }
                    }
                }
                i
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let Some(uri) = member::<String>(&params, "uri") else {
                    return answer(&error_value(Some(&id), -32602, "Invalid params: no uri"));
                };
                match self.resolve_uri(&s, &uri, &caller).await {
                    Ok(i) => i,
                    Err(why) => return answer(&error_value(Some(&id), -32602, why)),
                }
            }
            "completion/complete" => {
                let r: Value = member(&params, "ref").unwrap_or(Value::Null);
                match r.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => {
                        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                        let Some((i, real)) =
                            self.resolve(&s, ListKind::Prompts, name, &caller).await
                        else {
                            return answer(&error_value(
                                Some(&id),
                                -32602,
                                "Invalid params: unknown prompt",
                            ));
                        };
                        let mut r = r.clone();
                        r["name"] = json!(real);
                        params.insert("ref".into(), raw(&r));
                        i
                    }
                    Some("ref/resource") => {
                        let uri = r.get("uri").and_then(Value::as_str).unwrap_or("");
                        match self.resolve_uri(&s, uri, &caller).await {
                            Ok(i) => i,
                            Err(why) => return answer(&error_value(Some(&id), -32602, why)),
                        }
                    }
                    _ => {
                        return answer(&error_value(
                            Some(&id),
                            -32602,
                            "Invalid params: unknown completion reference",
                        ))
                    }
                }
            }
            "logging/setLevel" => {
                for i in 0..self.members.len() {
                    let logs = s.legs[i].lock().await.capabilities.get("logging").is_some();
                    if logs {
                        let mut one = m.clone();
                        one.insert(
                            "id".into(),
                            raw(&json!(s.next.fetch_add(1, Ordering::Relaxed))),
                        );
                        self.pass_on(&s, i, &one, &caller).await;
                    }
                }
                return answer(&json!({"jsonrpc": "2.0", "id": id, "result": {}}));
            }
            _ => {
                return answer(&error_value(
                    Some(&id),
                    -32601,
                    &format!("Method not found: {}", loggable(method)),
                ))
            }
        };
        // What the client asks progress about (only that comes back).
        let progress: Option<Value> = member::<Members>(&params, "_meta")
            .and_then(|meta| member::<Value>(&meta, "progressToken"));
        m.insert("params".into(), raw_members(&params));
        self.relay(s, target, m, id, progress, caller).await
    }

    /// Sends a routed request to member `i` under an id of the aggregator's
    /// and passes its answer on with the client's id: a JSON answer whole,
    /// a stream event by event.
    pub(super) async fn relay(
        self: Arc<Self>,
        s: Arc<VSession>,
        i: usize,
        m: &mut Members,
        id: Value,
        progress: Option<Value>,
        caller: CallerCredentials,
    ) -> Response<Body> {
        let unavailable = |why: &str| {
            json_response(
                StatusCode::OK,
                None,
                &error_value(
                    Some(&id),
                    -32603,
                    &format!("`{}` is unavailable: {why}", self.members[i].server),
                ),
            )
        };
        let mut leg = match self.leg(&s, i, &caller).await {
            Ok(l) => l,
            Err(_) => return unavailable("its session could not be opened"),
        };
        let ours = s.next.fetch_add(1, Ordering::Relaxed);
        m.insert("id".into(), raw(&json!(ours)));
        let Ok(body) = serde_json::to_vec(m) else {
            return plain(StatusCode::BAD_REQUEST);
        };
        let key = id.to_string();
        {
            let mut inflight = lock(&s.inflight);
            if inflight.len() >= MAX_INFLIGHT {
                return too_many(&id, "too many requests in flight on this session");
            }
            inflight.insert(key.clone(), (i, ours));
        }
        // Forgotten however this ends (a client that goes away included);
        // a stream hands it to its task.
        let mut guard = InFlight {
            s: s.clone(),
            key: key.clone(),
            armed: true,
        };
        let mut resp = None;
        for attempt in 0..2 {
            match self.post(i, Some(&leg), &caller, body.clone()).await {
                Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                    if attempt == 1 {
                        break;
                    }
                    leg = match self.reopen(&s, i, leg.sid.as_deref(), &caller).await {
                        Ok(l) => l,
                        Err(_) => {
                            return unavailable("its session could not be opened again");
                        }
                    };
                }
                Ok(r) => {
                    resp = Some(r);
                    break;
                }
                Err(why) => {
                    self.failed(i, "call", &why);
                    return unavailable("not reachable");
                }
            }
        }
        let Some(resp) = resp else {
            return unavailable("its session is gone");
        };
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let ours_v = json!(ours);
        if !ct.starts_with("text/event-stream") {
            let b = resp.bytes().await.unwrap_or_default();
            if status == StatusCode::ACCEPTED {
                return plain(StatusCode::ACCEPTED);
            }
            // The member leg's answer (its error, or the gateway's, included)
            // with the client's id. Members stay as written.
            // A response only: a request or notification in its place is
            // no answer (and never reaches the client under its id).
            let answered = serde_json::from_slice::<Members>(&b).ok().filter(|a| {
                !a.contains_key("method")
                    && (a.contains_key("result") || a.contains_key("error"))
                    && (member::<Value>(a, "id").as_ref() == Some(&ours_v)
                        || member::<Value>(a, "id") == Some(Value::Null))
            });
            let Some(mut a) = answered else {
                self.failed(i, "call", &format!("HTTP {status}: no JSON-RPC answer"));
                return unavailable("it gave no answer");
            };
            a.insert("id".into(), raw(&id));
            let out = serde_json::to_vec(&a).unwrap_or_default();
            // One member down is an error for this call, not for the
            // client's whole session; the client's own faults (401, 403,
            // 429 …) keep their status.
            let status = if status.is_server_error() {
                self.failed(i, "call", &format!("HTTP {status}"));
                StatusCode::OK
            } else {
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
            };
            let mut r = Response::new(Full::new(Bytes::from(out)).boxed());
            *r.status_mut() = status;
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            return r;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_DEPTH);
        let me = self.clone();
        guard.armed = false;
        tokio::spawn(async move {
            let mut body = MemberStream::new(resp);
            let mut answered = false;
            'read: loop {
                let messages = tokio::select! {
                    m = body.next() => m,
                    _ = tx.closed() => break 'read,
                };
                let Ok(messages) = messages else { break };
                for mut v in messages {
                    let method = v.get("method").and_then(Value::as_str);
                    if is_response(&v) && v.get("id") == Some(&ours_v) {
                        v["id"] = id.clone();
                        answered = true;
                    } else if method == Some("notifications/progress") {
                        // Only about this call: a member cannot report on
                        // another's.
                        let token = v.pointer("/params/progressToken");
                        if progress.is_none() || token != progress.as_ref() {
                            continue;
                        }
                    } else if !me.member_said(&s, i, &mut v) {
                        continue;
                    }
                    if tx.send(sse_event(&v)).await.is_err() {
                        break 'read;
                    }
                    if answered {
                        break 'read;
                    }
                }
            }
            // Cancelled by the client: answered by no one.
            let cancelled = lock(&s.inflight).remove(&key).is_none();
            if !answered && !cancelled && !tx.is_closed() {
                let _ = tx
                    .send(sse_event(&error_value(
                        Some(&id),
                        -32603,
                        &format!(
                            "`{}` ended its stream without an answer",
                            me.members[i].server
                        ),
                    )))
                    .await;
            }
        });
        sse(rx, None)
    }

    /// A message a member sent on its own (on a call's stream or its GET
    /// stream), made the client's: a server→client request gets an id of
    /// the aggregator's; a cancellation of one of those is translated; a
    /// list change makes its names be read again. `false`: not passed on.
    pub(super) fn member_said(&self, s: &VSession, i: usize, v: &mut Value) -> bool {
        let Some(method) = v.get("method").and_then(Value::as_str).map(str::to_owned) else {
            // A response to nothing the client asked (here): not passed on.
            return false;
        };
        if let Some(mid) = v.get("id").cloned() {
            let mut asked = lock(&s.asked);
            if asked.len() >= MAX_ASKED || mid.to_string().len() > MAX_ID {
                return false;
            }
            let bid = s.next.fetch_add(1, Ordering::Relaxed);
            asked.insert(bid, (i, mid));
            v["id"] = json!(format!("{ASK_PREFIX}{bid}"));
            return true;
        }
        // Progress goes only with the call it is about (see `relay`).
        if method == "notifications/progress" {
            return false;
        }
        if method == "notifications/cancelled" {
            let Some(mid) = v.pointer("/params/requestId").cloned() else {
                return false;
            };
            let mut asked = lock(&s.asked);
            let Some(bid) = asked
                .iter()
                .find(|(_, (m, x))| *m == i && *x == mid)
                .map(|(b, _)| *b)
            else {
                return false;
            };
            asked.remove(&bid);
            v["params"]["requestId"] = json!(format!("{ASK_PREFIX}{bid}"));
            return true;
        }
        let changed = ListKind::changed(&method);
        if !changed.is_empty() {
            let mut l = lock(&s.learned);
            for k in changed {
                l.stale[*k as usize][i] = true;
            }
        }
        true
    }

    /// The merged GET stream of a session (one at a time: a new one ends
    /// the one before).
    pub(super) fn get(
        self: Arc<Self>,
        s: Arc<VSession>,
        caller: CallerCredentials,
    ) -> Response<Body> {
        // A stop every task sees, even one not started yet.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        if let Some(old) = lock(&s.get_stop).replace(stop_tx) {
            let _ = old.send(true);
        }
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_DEPTH);
        for i in 0..self.members.len() {
            let me = self.clone();
            let s = s.clone();
            let tx = tx.clone();
            let caller = caller.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let leg = s.legs[i].lock().await.clone();
                if leg.sid.is_none() {
                    return;
                }
                let rb = me
                    .to_member(reqwest::Method::GET, i, Some(&leg), &caller)
                    .header("accept", "text/event-stream");
                let resp = tokio::select! {
                    r = rb.send() => r,
                    _ = tx.closed() => return,
                    _ = stop.wait_for(|v| *v) => return,
                };
                let Ok(resp) = resp else { return };
                if resp.status() != StatusCode::OK {
                    return;
                }
                let mut body = MemberStream::new(resp);
                loop {
                    let messages = tokio::select! {
                        m = body.next() => m,
                        _ = tx.closed() => return,
                        _ = stop.wait_for(|v| *v) => return,
                    };
                    let Ok(messages) = messages else { return };
                    for mut v in messages {
                        if !me.member_said(&s, i, &mut v) {
                            continue;
                        }
                        // A client that does not read loses the stream.
                        if tx.try_send(sse_event(&v)).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        sse(rx, None)
    }
}

pub(super) async fn serve(listener: tokio::net::TcpListener, agg: Arc<Aggregator>) {
    // Idle sessions end, and their member sessions with them.
    let reaper = agg.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let mut idle = Vec::new();
            lock(&reaper.sessions).retain(|_, s| {
                let quiet = lock(&s.last_used).elapsed() >= IDLE;
                if quiet {
                    idle.push(s.clone());
                }
                !quiet
            });
            for s in idle {
                if let Some(stop) = lock(&s.get_stop).take() {
                    let _ = stop.send(true);
                }
                let caller = lock(&s.caller).clone();
                reaper.end(&s, &caller).await;
            }
        }
    });
    crate::loopback::serve(listener, 4096, move |req| {
        let a = agg.clone();
        async move { a.handle(req).await }
    })
    .await;
}
