//! The names a client sees: per-member name tables (aliases, prefixes),
//! resolving a name or URI to its member, tool views, sealed cursors and
//! the merged lists.

use super::*;

impl Aggregator {
    /// Decides the client's names for tools or prompts, in member order:
    /// the bundle's aliases first; then each member's names, bare or
    /// prefixed as the member says, a name already taken never taken
    /// again. While an earlier member's list is unknown (it is down),
    /// later members get no bare names: a name could otherwise move from
    /// one member to another when it comes back.
    pub(super) fn table(&self, l: &Learned, kind: ListKind) -> NameTable {
        let mut t = NameTable::default();
        let sets = &l.sets[kind as usize];
        let bound = &l.bound[kind as usize];
        let has = |i: usize, real: &str| {
            sets[i]
                .as_ref()
                .is_some_and(|names| names.iter().any(|n| n == real))
        };
        // A name this session was shown keeps its meaning while its tool
        // is there (and is never given to another).
        for (name, (i, real)) in bound {
            if has(*i, real) && !t.by_real.contains_key(&(*i, real.clone())) {
                t.by_name.insert(name.clone(), (*i, real.clone()));
                t.by_real.insert((*i, real.clone()), name.clone());
            }
        }
        if kind == ListKind::Tools {
            for (i, m) in self.members.iter().enumerate() {
                for (real, view) in &m.tools {
                    let (Some(alias), Some(names)) = (&view.alias, &sets[i]) else {
                        continue;
                    };
                    if names.contains(real) && !t.by_real.contains_key(&(i, real.clone())) {
                        t.by_name.insert(alias.clone(), (i, real.clone()));
                        t.by_real.insert((i, real.clone()), alias.clone());
                    }
                }
            }
        }
        let taken = |t: &NameTable, n: &str| {
            t.by_name.contains_key(n)
                || bound.contains_key(n)
                || (kind == ListKind::Tools && self.aliases.contains(n))
        };
        for (i, m) in self.members.iter().enumerate() {
            let Some(names) = &sets[i] else { continue };
            let earlier_unknown =
                (0..i).any(|j| self.members[j].prefixing != Prefixing::Always && sets[j].is_none());
            for real in names {
                if t.by_real.contains_key(&(i, real.clone())) {
                    continue;
                }
                let prefixed = format!("{}_{real}", m.prefix);
                let candidates: Vec<String> = match (m.prefixing, earlier_unknown) {
                    (Prefixing::Always, _) => vec![prefixed],
                    (Prefixing::Never, false) => vec![real.clone()],
                    (Prefixing::Never, true) => Vec::new(),
                    (Prefixing::Conflict, false) => vec![real.clone(), prefixed],
                    (Prefixing::Conflict, true) => vec![prefixed],
                };
                if let Some(name) = candidates.into_iter().find(|c| !taken(&t, c)) {
                    t.by_name.insert(name.clone(), (i, real.clone()));
                    t.by_real.insert((i, real.clone()), name);
                }
            }
        }
        t
    }

    /// The current names table for tools or prompts.
    pub(super) fn names(&self, s: &VSession, kind: ListKind) -> Arc<NameTable> {
        let mut l = lock(&s.learned);
        let slot = kind as usize;
        if let Some(t) = &l.tables[slot] {
            return t.clone();
        }
        let t = Arc::new(self.table(&l, kind));
        for (name, target) in &t.by_name {
            if l.bound[slot].len() >= MAX_NAMES * 4 {
                break;
            }
            l.bound[slot]
                .entry(name.clone())
                .or_insert_with(|| target.clone());
        }
        l.tables[slot] = Some(t.clone());
        t
    }

    /// Reads the whole `kind` list of each member not known yet, or
    /// announced as changed (or every member's, with `all`). A member that
    /// cannot be read keeps what was known of it.
    pub(super) async fn learn(
        &self,
        s: &VSession,
        kind: ListKind,
        caller: &CallerCredentials,
        all: bool,
    ) {
        let wanted: Vec<usize> = {
            let l = lock(&s.learned);
            (0..self.members.len())
                .filter(|&i| {
                    (all || l.sets[kind as usize][i].is_none() || l.stale[kind as usize][i])
                        && l.failed_at[kind as usize][i]
                            .is_none_or(|t| t.elapsed() >= RELEARN_EVERY)
                })
                .collect()
        };
        if wanted.is_empty() {
            return;
        }
        let jobs = wanted.into_iter().map(|i| async move {
            let caps = match self.leg(s, i, caller).await {
                Ok(l) => l.capabilities,
                Err(_) => return (i, None),
            };
            if caps.get(kind.capability()).is_none() {
                return (i, Some(Vec::new()));
            }
            let mut names = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let params = match &cursor {
                    Some(c) => json!({"cursor": c}),
                    None => json!({}),
                };
                match self.ask_member(s, i, caller, kind.method(), params).await {
                    Ok(r) => {
                        for item in r
                            .get(kind.items())
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(n) = item.get(kind.key()).and_then(Value::as_str) {
                                if n.len() <= MAX_NAME_LEN && names.len() < MAX_NAMES {
                                    names.push(n.to_owned());
                                }
                            }
                        }
                        cursor = r
                            .get("nextCursor")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        if cursor.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        self.setback(i, "list", &e);
                        return (i, None);
                    }
                }
            }
            (i, Some(names))
        });
        let done = futures_util::future::join_all(jobs).await;
        let mut l = lock(&s.learned);
        for (i, names) in done {
            match names {
                Some(n) => {
                    l.sets[kind as usize][i] = Some(n);
                    l.stale[kind as usize][i] = false;
                    l.failed_at[kind as usize][i] = None;
                }
                None => l.failed_at[kind as usize][i] = Some(Instant::now()),
            }
        }
        l.relearned[kind as usize] = Some(Instant::now());
        if let Some(t) = l.tables.get_mut(kind as usize) {
            *t = None;
        }
    }

    /// Whether an unknown name may make the lists be read again now.
    pub(super) fn may_relearn(&self, s: &VSession, kind: ListKind) -> bool {
        lock(&s.learned).relearned[kind as usize].is_none_or(|t| t.elapsed() >= RELEARN_EVERY)
    }

    /// The member and upstream name behind the name `name` the client used.
    pub(super) async fn resolve(
        &self,
        s: &VSession,
        kind: ListKind,
        name: &str,
        caller: &CallerCredentials,
    ) -> Option<(usize, String)> {
        // Served from what is known; a slow member is waited for only when
        // the name is not known yet.
        if let Some(hit) = self.names(s, kind).by_name.get(name) {
            return Some(hit.clone());
        }
        self.learn(s, kind, caller, false).await;
        if let Some(hit) = self.names(s, kind).by_name.get(name) {
            return Some(hit.clone());
        }
        // Unknown: a member's list may have changed unannounced.
        if !self.may_relearn(s, kind) {
            return None;
        }
        self.learn(s, kind, caller, true).await;
        self.names(s, kind).by_name.get(name).cloned()
    }

    /// The member serving resource `uri`: the one member that listed it or
    /// has a template whose fixed beginning it has (several: refused), else
    /// the one member with resources at all.
    pub(super) async fn resolve_uri(
        &self,
        s: &VSession,
        uri: &str,
        caller: &CallerCredentials,
    ) -> Result<usize, &'static str> {
        for pass in 0..2 {
            if pass == 1 {
                if !self.may_relearn(s, ListKind::Resources) {
                    break;
                }
                self.learn(s, ListKind::Resources, caller, true).await;
                self.learn(s, ListKind::Templates, caller, true).await;
            } else {
                self.learn(s, ListKind::Resources, caller, false).await;
                self.learn(s, ListKind::Templates, caller, false).await;
            }
            let l = lock(&s.learned);
            let members: Vec<(bool, Vec<&str>)> = (0..self.members.len())
                .map(|i| {
                    let listed =
                        |k: ListKind| l.sets[k as usize][i].iter().flatten().any(|u| u == uri);
                    (
                        listed(ListKind::Resources) || listed(ListKind::Templates),
                        l.sets[ListKind::Templates as usize][i]
                            .iter()
                            .flatten()
                            .map(String::as_str)
                            .collect(),
                    )
                })
                .collect();
            if let Some(i) = claimant(uri, &members)? {
                return Ok(i);
            }
        }
        let mut with = Vec::new();
        for i in 0..self.members.len() {
            if s.legs[i]
                .lock()
                .await
                .capabilities
                .get("resources")
                .is_some()
            {
                with.push(i);
            }
        }
        match with.as_slice() {
            [i] => Ok(*i),
            _ => Err("Resource not found"),
        }
    }

    /// The client's view of member `i`'s list item; `None`: not shown (a
    /// name no longer its own, or not learned yet).
    pub(super) fn view(
        &self,
        table: Option<&NameTable>,
        kind: ListKind,
        i: usize,
        mut item: Value,
    ) -> Option<(String, Value)> {
        let real = item.get(kind.key())?.as_str()?.to_owned();
        let Some(t) = table else {
            return Some((real, item));
        };
        let name = t.by_real.get(&(i, real.clone()))?.clone();
        item["name"] = json!(name);
        if kind == ListKind::Tools {
            if let Some(v) = self.members[i].tools.get(&real) {
                if let Some(x) = &v.title {
                    item["title"] = json!(x);
                }
                if let Some(d) = &v.description {
                    item["description"] = json!(d);
                }
                if let Some(schema) = item.get_mut("inputSchema").and_then(Value::as_object_mut) {
                    let fixed: Vec<&String> = v.hidden.keys().chain(v.defaults.keys()).collect();
                    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut)
                    {
                        for k in v.hidden.keys() {
                            props.remove(k);
                        }
                        for (k, d) in &v.defaults {
                            if let Some(p) = props.get_mut(k).and_then(Value::as_object_mut) {
                                p.insert("default".into(), d.clone());
                            }
                        }
                    }
                    if let Some(req) = schema.get_mut("required").and_then(Value::as_array_mut) {
                        req.retain(|r| !fixed.iter().any(|k| r.as_str() == Some(k.as_str())));
                    }
                }
            }
        }
        Some((name, item))
    }

    pub(super) fn seal_cursor(
        &self,
        s: &VSession,
        kind: ListKind,
        state: &[Option<Option<String>>],
    ) -> Option<String> {
        let payload = serde_json::to_vec(&json!({"s": s.id, "k": kind as u8, "c": state})).ok()?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.cursor_key
            .seal(CURSOR_PREFIX, CURSOR_AAD, nonce, payload)
    }

    pub(super) fn open_cursor(
        &self,
        s: &VSession,
        kind: ListKind,
        token: &str,
    ) -> Option<Vec<Option<Option<String>>>> {
        let plain = self
            .cursor_key
            .open(CURSOR_PREFIX, CURSOR_AAD, token, 64 << 10)?;
        let v: Value = serde_json::from_slice(&plain).ok()?;
        if v.get("s")?.as_str()? != s.id || v.get("k")?.as_u64()? != kind as u64 {
            return None;
        }
        let c: Vec<Option<Option<String>>> = serde_json::from_value(v.get("c")?.clone()).ok()?;
        (c.len() == self.members.len()).then_some(c)
    }

    /// One merged page of a list.
    pub(super) async fn list(
        &self,
        s: &VSession,
        kind: ListKind,
        params: Option<&Members>,
        id: &Value,
        caller: &CallerCredentials,
    ) -> Value {
        let cursor: Option<String> = params.and_then(|p| member(p, "cursor"));
        // Per member: None = done; Some(None) = from the start; Some(Some(c)) = from c.
        let state = match &cursor {
            Some(c) => match self.open_cursor(s, kind, c) {
                Some(st) => st,
                None => return error_value(Some(id), -32602, "Invalid cursor"),
            },
            None => vec![Some(None); self.members.len()],
        };
        self.learn(s, kind, caller, false).await;
        let jobs = state.iter().enumerate().filter_map(|(i, st)| {
            let from = st.clone()?;
            Some(async move {
                let caps = match self.leg(s, i, caller).await {
                    Ok(l) => l.capabilities,
                    Err(why) => return (i, Err(Asked::Broken(why))),
                };
                if caps.get(kind.capability()).is_none() {
                    return (i, Ok(json!({})));
                }
                let params = match &from {
                    Some(c) => json!({"cursor": c}),
                    None => json!({}),
                };
                (
                    i,
                    self.ask_member(s, i, caller, kind.method(), params).await,
                )
            })
        });
        let pages = futures_util::future::join_all(jobs).await;
        let table =
            matches!(kind, ListKind::Tools | ListKind::Prompts).then(|| self.names(s, kind));
        let mut next: Vec<Option<Option<String>>> = vec![None; self.members.len()];
        let mut items = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, page) in pages {
            match page {
                Ok(r) => {
                    self.health(i, Ok(()));
                    for item in r
                        .get(kind.items())
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                    {
                        if let Some((name, item)) = self.view(table.as_deref(), kind, i, item) {
                            if seen.insert(name) {
                                items.push(item);
                            }
                        }
                    }
                    if let Some(c) = r.get("nextCursor").and_then(Value::as_str) {
                        next[i] = Some(Some(c.to_owned()));
                    }
                }
                // Left out of the listing; the others are served.
                Err(e) => self.setback(i, "list", &e),
            }
        }
        let mut result = serde_json::Map::new();
        result.insert(kind.items().into(), Value::from(items));
        if next.iter().any(Option::is_some) {
            if let Some(c) = self.seal_cursor(s, kind, &next) {
                result.insert("nextCursor".into(), json!(c));
            }
        }
        json!({"jsonrpc": "2.0", "id": id, "result": result})
    }
}
