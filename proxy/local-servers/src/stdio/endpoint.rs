//! The loopback endpoint: POSTed messages written to the process and their
//! answers streamed back (with a deadline), the GET stream, sessions opened
//! for their owner; and a message's members kept as the text they arrived as.

use super::*;

pub(super) fn set_member(m: &mut Members, name: &str, v: &Value) {
    if let Ok(r) = RawValue::from_string(v.to_string()) {
        m.insert(name.to_owned(), r);
    }
}

/// Replaces the value at `path` (objects only) with `bid`; returns what was
/// there. Everything else stays as written.
pub(super) fn rewrite_nested(m: &mut Members, path: &[&str], bid: u64) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    if rest.is_empty() {
        let old = member::<Value>(m, first)?;
        set_member(m, first, &json!(bid));
        return Some(old);
    }
    let mut inner: Members = member(m, first)?;
    let old = rewrite_nested(&mut inner, rest, bid)?;
    let text = serde_json::to_string(&inner).ok()?;
    m.insert((*first).to_owned(), RawValue::from_string(text).ok()?);
    Some(old)
}

/// A message to a client stream, never waited for: a stream that is full
/// (a client that does not read) loses the message and is cut.
pub(super) fn deliver(tx: &mpsc::Sender<Value>, v: Value) {
    let _ = tx.try_send(v);
}

impl Shared {
    pub(super) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let authorised = req
            .headers()
            .get(SECRET_HEADER)
            .is_some_and(|v| crate::loopback::same(v.as_bytes(), self.secret.as_bytes()));
        if !authorised {
            return crate::loopback::plain(StatusCode::FORBIDDEN, "");
        }
        let sid = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match *req.method() {
            Method::POST => self.post(req, sid).await,
            Method::GET => self.get(sid),
            Method::DELETE => {
                let removed = sid.and_then(|s| lock(&self.sessions).remove(&s));
                match removed {
                    Some(s) => {
                        if !self.cfg.shared {
                            s.child.end();
                        }
                        self.release_owner(&s.owner);
                        crate::loopback::plain(StatusCode::OK, "")
                    }
                    None => not_found(),
                }
            }
            _ => crate::loopback::plain(StatusCode::METHOD_NOT_ALLOWED, ""),
        }
    }

    pub(super) fn get(&self, sid: Option<String>) -> Response<Body> {
        let Some(session) = sid.and_then(|s| lock(&self.sessions).get(&s).cloned()) else {
            return not_found();
        };
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        *lock(&session.get) = Some(tx);
        sse(rx, None, None)
    }

    pub(super) async fn post(
        self: Arc<Self>,
        req: Request<Incoming>,
        sid: Option<String>,
    ) -> Response<Body> {
        let owner = crate::loopback::header_text(&req, OWNER_HEADER);
        let body = match http_body_util::Limited::new(req.into_body(), MAX_LINE)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return crate::loopback::plain(StatusCode::PAYLOAD_TOO_LARGE, ""),
        };
        // Members stay as the gateway judged them, byte for byte: only ids
        // and progress tokens are rewritten.
        let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let raws: Vec<Box<RawValue>> = if batch {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => vec![v],
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        };
        let mut messages: Vec<Members> = Vec::with_capacity(raws.len());
        for r in &raws {
            match serde_json::from_str::<Members>(r.get()) {
                Ok(m) => messages.push(m),
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        }
        let initialize = messages.len() == 1
            && member::<String>(&messages[0], "method").as_deref() == Some("initialize")
            && messages[0].contains_key("id");
        let (session_id, session) = if initialize {
            let id = member::<Value>(&messages[0], "id");
            match self.open_session(&owner) {
                Ok(x) => x,
                Err(why) => {
                    tracing::warn!(server = %self.server, "no process for a new session: {why}");
                    return json_error(StatusCode::TOO_MANY_REQUESTS, id, &why);
                }
            }
        } else {
            let found = sid.and_then(|s| lock(&self.sessions).get(&s).cloned().map(|x| (s, x)));
            match found {
                Some(x) => x,
                None => return not_found(),
            }
        };
        let child = session.child.clone();
        if !child.alive.load(Ordering::Relaxed) {
            return not_found();
        }
        *lock(&session.last_used) = Instant::now();
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        let mut requests = 0usize;
        let mut asked: Vec<u64> = Vec::new();
        for m in messages.iter_mut() {
            let method = member::<String>(m, "method");
            let id = member::<Value>(m, "id");
            match (method.is_some(), id) {
                (true, Some(id)) => {
                    let bid = child.next.fetch_add(1, Ordering::Relaxed);
                    let progress = rewrite_nested(m, &["params", "_meta", "progressToken"], bid);
                    lock(&child.pending).insert(
                        bid,
                        Pending {
                            session: session_id.clone(),
                            id,
                            progress,
                            tx: tx.clone(),
                        },
                    );
                    set_member(m, "id", &json!(bid));
                    requests += 1;
                    asked.push(bid);
                }
                (false, Some(id)) => {
                    // The client's answer to a server→client request.
                    let own = id
                        .as_u64()
                        .and_then(|b| lock(&child.asked).remove(&b))
                        .filter(|(s, _)| *s == session_id);
                    match own {
                        Some((_, original)) => set_member(m, "id", &original),
                        None => continue,
                    }
                }
                (true, None) => {
                    // A cancellation names the request by the client's id;
                    // a cancelled request is answered by no one, so its
                    // stream ends here.
                    if method.as_deref() == Some("notifications/cancelled") {
                        let wanted = member::<Members>(m, "params")
                            .and_then(|p| member::<Value>(&p, "requestId"));
                        let bid = lock(&child.pending)
                            .iter()
                            .find(|(_, p)| {
                                p.session == session_id && Some(&p.id) == wanted.as_ref()
                            })
                            .map(|(k, _)| *k);
                        match bid {
                            Some(b) => {
                                rewrite_nested(m, &["params", "requestId"], b);
                                lock(&child.pending).remove(&b);
                            }
                            None => continue,
                        }
                    }
                }
                (false, None) => continue,
            }
            match serde_json::to_string(m) {
                Ok(line) => child.send_line(line),
                Err(_) => return crate::loopback::plain(StatusCode::BAD_REQUEST, ""),
            }
        }
        drop(tx);
        if requests == 0 {
            return crate::loopback::plain(StatusCode::ACCEPTED, "");
        }
        let deadline = Deadline {
            after: self.read,
            child: child.clone(),
            asked,
            server: self.server.clone(),
        };
        sse(
            rx,
            Some((requests, deadline)),
            initialize.then_some(session_id),
        )
    }

    /// A new session (and, in session mode, its process) for `owner`.
    pub(super) fn open_session(
        self: &Arc<Self>,
        owner: &str,
    ) -> Result<(String, Arc<Session>), String> {
        if self.retired.load(Ordering::Relaxed) {
            return Err(format!(
                "the setup of `{}` changed: initialize again",
                self.server
            ));
        }
        let child = if self.cfg.shared {
            self.common()?
        } else {
            let held = lock(&self.owners).get(owner).copied().unwrap_or(0);
            if held >= self.cfg.max_per_principal {
                return Err(format!(
                    "this principal already holds {held} `{}` processes (stdio.max_per_principal)",
                    self.server
                ));
            }
            self.spawn()?
        };
        let id = hex::encode(rand::random::<[u8; 16]>());
        let s = Arc::new(Session {
            child,
            get: Mutex::new(None),
            owner: owner.to_owned(),
            last_used: Mutex::new(Instant::now()),
        });
        lock(&self.sessions).insert(id.clone(), s.clone());
        *lock(&self.owners).entry(owner.to_owned()).or_default() += 1;
        Ok((id, s))
    }
}

pub(super) fn json_error(status: StatusCode, id: Option<Value>, message: &str) -> Response<Body> {
    let v = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32001, "message": message}});
    crate::loopback::json(status, None, v.to_string())
}

/// When a POST's requests stop waiting for the process: after `after`
/// without a message from it (a process that stopped, or one whose
/// messages never end a line), each request still unanswered is answered
/// with an error that names the server, and forgotten.
pub(super) struct Deadline {
    after: Duration,
    child: Arc<Child>,
    asked: Vec<u64>,
    server: String,
}

impl Deadline {
    /// The errors for the requests still waiting (their client ids).
    pub(super) fn expire(&self) -> Vec<Value> {
        let mut pending = lock(&self.child.pending);
        self.asked
            .iter()
            .filter_map(|bid| pending.remove(bid))
            .map(|p| {
                json!({"jsonrpc": "2.0", "id": p.id, "error": {
                    "code": -32001,
                    "message": format!("MCP server `{}` did not answer in time", self.server),
                }})
            })
            .collect()
    }
}

/// An SSE response of what arrives on `rx`, ending after the POST's
/// responses (never, for a GET stream), or at its deadline.
pub(super) fn sse(
    rx: mpsc::Receiver<Value>,
    responses: Option<(usize, Deadline)>,
    session: Option<String>,
) -> Response<Body> {
    let stream = futures_util::stream::unfold((rx, responses), |(mut rx, left)| async move {
        let v = match &left {
            Some((0, _)) => return None,
            Some((_, deadline)) => {
                match tokio::time::timeout(deadline.after, rx.recv()).await {
                    Ok(v) => v?,
                    Err(_) => {
                        // Every request still waiting is answered at once.
                        let errors = deadline.expire();
                        if errors.is_empty() {
                            return None;
                        }
                        let text: String = errors
                            .iter()
                            .map(|e| format!("event: message\ndata: {e}\n\n"))
                            .collect();
                        return Some((Bytes::from(text), (rx, left.map(|(_, d)| (0, d)))));
                    }
                }
            }
            None => rx.recv().await?,
        };
        let is_response = v.get("result").is_some() || v.get("error").is_some();
        let left = left.map(|(n, d)| (if is_response { n - 1 } else { n }, d));
        let event = Bytes::from(format!("event: message\ndata: {v}\n\n"));
        Some((event, (rx, left)))
    });
    crate::loopback::event_stream(stream, session.as_deref())
}

pub(super) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    // Requests whose client went away stop being waited for; idle
    // sessions (and their processes) end.
    let reaper = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let children: Vec<Arc<Child>> = lock(&reaper.sessions)
                .values()
                .map(|s| s.child.clone())
                .collect();
            for c in &children {
                lock(&c.pending).retain(|_, p| !p.tx.is_closed());
            }
            let idle = reaper.cfg.idle_timeout;
            let mut ended = Vec::new();
            lock(&reaper.sessions).retain(|_, s| {
                let quiet = lock(&s.last_used).elapsed() >= idle;
                if quiet {
                    ended.push(s.clone());
                }
                !quiet
            });
            for s in ended {
                reaper.release_owner(&s.owner);
                if !reaper.cfg.shared {
                    s.child.end();
                }
            }
        }
    });
    crate::loopback::serve(listener, 1024, move |req| {
        let s = shared.clone();
        async move { s.handle(req).await }
    })
    .await;
}
