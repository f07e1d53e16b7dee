//! What a bundle's modules name, as regorus parses them: the packages and
//! rules they declare (the entrypoint is looked up there, never in the
//! text), and every function call and `data.` reference checked to resolve
//! to something, so that a policy that cannot run is refused when it is
//! built rather than denying every call with `policy_error`.
//!
//! A call resolves as regorus' interpreter resolves it: `print`, an import
//! alias's function, a function of the module's package (or of the package
//! a `data.` path names, a `default` one included), a builtin. A `data.`
//! reference (also through an import alias), as far as its path is static,
//! resolves when a rule declares its path or a prefix of it, when it is a
//! prefix of a rule's or a package's path, or when `data.json` holds it (or
//! a value it indexes into). Every rule is checked, whether or not the
//! entrypoint reaches it.

use std::collections::{BTreeMap, BTreeSet};

use regorus::unstable::{Expr, Literal, Module, Query, Ref, Rule, RuleHead};

use super::diagnostics::edit_distance;

/// Nesting the checker follows (regorus' parser stops far below it).
const MAX_DEPTH: usize = 1024;

/// One unresolved reference: the module it is in and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unresolved {
    pub file: String,
    pub message: String,
}

/// The packages and rules a policy's modules declare, and its functions.
pub(super) struct Declared {
    /// Package paths, as components (`["data", "warden", "authz"]`).
    packages: BTreeSet<Vec<String>>,
    /// Every rule's path as components, as far as it is static
    /// (`p[x] := …` gives `[…, "p"]`).
    rules: BTreeSet<Vec<String>>,
    /// Functions by their canonical path (`data.warden.authz.f`), defaults
    /// with arguments included.
    functions: BTreeSet<String>,
}

/// `data.a["b"].c` as components, as far as they are static; the root
/// variable's name first. `None` for what is no reference.
fn components(e: &Expr) -> Option<Vec<String>> {
    match e {
        Expr::Var { span, .. } => Some(vec![span.text().to_owned()]),
        Expr::RefDot { refr, field, .. } => {
            let mut c = components(refr)?;
            c.push(field.0.text().to_owned());
            Some(c)
        }
        Expr::RefBrack { refr, index, .. } => {
            let mut c = components(refr)?;
            match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    c.push(value.as_string().ok()?.as_ref().to_owned());
                }
                // A dynamic index: what follows is not known.
                _ => c.push(String::new()),
            }
            Some(c)
        }
        _ => None,
    }
}

/// `components` cut at the first dynamic index.
fn static_part(mut c: Vec<String>) -> Vec<String> {
    if let Some(i) = c.iter().position(String::is_empty) {
        c.truncate(i);
    }
    c
}

/// `components` written as one path (`data.a["b-c"].d`): how calls and
/// functions are compared.
fn canonical(c: &[String]) -> String {
    let mut s = String::new();
    for (i, part) in c.iter().enumerate() {
        let ident =
            part.bytes().enumerate().all(|(j, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (j > 0 && b.is_ascii_digit())
            }) && !part.is_empty();
        if i == 0 {
            s.push_str(part);
        } else if ident {
            s.push('.');
            s.push_str(part);
        } else {
            s.push('[');
            s.push_str(&serde_json::Value::from(part.as_str()).to_string());
            s.push(']');
        }
    }
    s
}

fn is_prefix(a: &[String], b: &[String]) -> bool {
    a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn package_of(m: &Module) -> Vec<String> {
    let mut p = vec!["data".to_owned()];
    p.extend(components(&m.package.refr).unwrap_or_default());
    p
}

/// A rule's head reference and whether it takes arguments.
fn head_of(rule: &Rule) -> (&Expr, bool) {
    match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => (refr, false),
            RuleHead::Func { refr, .. } => (refr, true),
        },
        Rule::Default { refr, args, .. } => (refr, !args.is_empty()),
    }
}

impl Declared {
    pub(super) fn of(modules: &[Ref<Module>]) -> Declared {
        let mut d = Declared {
            packages: BTreeSet::new(),
            rules: BTreeSet::new(),
            functions: BTreeSet::new(),
        };
        for m in modules {
            let package = package_of(m);
            for rule in &m.policy {
                let (refr, function) = head_of(rule);
                let mut path = package.clone();
                path.extend(static_part(components(refr).unwrap_or_default()));
                if function {
                    d.functions.insert(canonical(&path));
                }
                d.rules.insert(path);
            }
            d.packages.insert(package);
        }
        d
    }

    /// Why `entrypoint` (`data.<package>.<rule>`) names no rule of the
    /// modules, if it does not.
    pub(super) fn missing_entrypoint(&self, entrypoint: &str) -> Option<String> {
        let want: Vec<String> = entrypoint.split('.').map(str::to_owned).collect();
        if want.len() < 3
            || self
                .rules
                .iter()
                .any(|r| is_prefix(r, &want) || is_prefix(&want, r))
        {
            return None;
        }
        let (package, rule) = (&want[..want.len() - 1], &want[want.len() - 1]);
        let shown = package[1..].join(".");
        // The rules declared directly below that package (by any module:
        // `package warden` with `authz.decision` declares into it).
        let names: BTreeSet<&String> = self
            .rules
            .iter()
            .filter(|r| r.len() == want.len() && is_prefix(package, r))
            .map(|r| &r[r.len() - 1])
            .collect();
        if names.is_empty() && !self.packages.iter().any(|p| p.as_slice() == package) {
            let known: BTreeSet<String> = self.packages.iter().map(|p| p[1..].join(".")).collect();
            return Some(format!(
                "policy.entrypoint `{entrypoint}`: no module declares package `{shown}` (declared: {})",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let near = names
            .iter()
            .filter(|r| edit_distance(r, rule) <= 2)
            .min_by_key(|r| edit_distance(r, rule));
        Some(match near {
            Some(n) => format!(
                "policy.entrypoint `{entrypoint}`: package `{shown}` defines no rule `{rule}`; did you mean `{n}`?"
            ),
            None => format!("policy.entrypoint `{entrypoint}`: package `{shown}` defines no rule `{rule}`"),
        })
    }
}

/// Checks every call and `data.` reference of `modules` (their ids are the
/// files named); `data` is the bundle's data document.
pub(super) fn unresolved(
    modules: &[Ref<Module>],
    declared: &Declared,
    data: &serde_json::Value,
) -> Option<Unresolved> {
    for m in modules {
        let mut c = Checker {
            declared,
            data,
            package: package_of(m),
            aliases: BTreeMap::new(),
            found: None,
        };
        for i in &m.imports {
            let Some(target) = components(&i.refr) else {
                continue;
            };
            if target.first().map(String::as_str) != Some("data") {
                continue;
            }
            let alias = match &i.r#as {
                Some(a) => a.text().to_owned(),
                None => target.last().cloned().unwrap_or_default(),
            };
            c.aliases.insert(alias, static_part(target));
        }
        for rule in &m.policy {
            c.rule(rule);
            if let Some(found) = c.found {
                return Some(Unresolved {
                    file: m.package.span.source.file().clone(),
                    message: found,
                });
            }
        }
    }
    None
}

struct Checker<'a> {
    declared: &'a Declared,
    data: &'a serde_json::Value,
    package: Vec<String>,
    /// Import alias → the `data.` path it stands for.
    aliases: BTreeMap<String, Vec<String>>,
    found: Option<String>,
}

impl Checker<'_> {
    fn rule(&mut self, rule: &Rule) {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.expr(refr, 0);
                        if let Some(a) = assign {
                            self.expr(&a.value, 0);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.expr(refr, 0);
                        if let Some(k) = key {
                            self.expr(k, 0);
                        }
                    }
                    RuleHead::Func { args, assign, .. } => {
                        for a in args {
                            self.expr(a, 0);
                        }
                        if let Some(a) = assign {
                            self.expr(&a.value, 0);
                        }
                    }
                }
                for b in bodies {
                    if let Some(a) = &b.assign {
                        self.expr(&a.value, 0);
                    }
                    self.query(&b.query, 0);
                }
            }
            Rule::Default { value, .. } => self.expr(value, 0),
        }
    }

    fn query(&mut self, q: &Query, depth: usize) {
        for s in &q.stmts {
            match &s.literal {
                Literal::SomeVars { .. } => {}
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    if let Some(k) = key {
                        self.expr(k, depth + 1);
                    }
                    self.expr(value, depth + 1);
                    self.expr(collection, depth + 1);
                }
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => {
                    self.expr(expr, depth + 1);
                }
                Literal::Every { domain, query, .. } => {
                    self.expr(domain, depth + 1);
                    self.query(query, depth + 1);
                }
            }
            for w in &s.with_mods {
                self.expr(&w.r#as, depth + 1);
            }
        }
    }

    fn fail(&mut self, span: &regorus::unstable::Span, message: String) {
        if self.found.is_none() {
            self.found = Some(format!(
                "line {}, column {}: {message}",
                span.line, span.col
            ));
        }
    }

    fn expr(&mut self, e: &Expr, depth: usize) {
        if self.found.is_some() {
            return;
        }
        if depth > MAX_DEPTH {
            self.fail(e.span(), "nested too deeply to check what it names".into());
            return;
        }
        let d = depth + 1;
        match e {
            Expr::Call {
                span, fcn, params, ..
            } => {
                self.call(span, fcn);
                for p in params {
                    self.expr(p, d);
                }
            }
            Expr::RefDot { .. } | Expr::RefBrack { .. } => {
                self.reference(e);
                // The dynamic indexes along the chain.
                let mut at = e;
                loop {
                    match at {
                        Expr::RefDot { refr, .. } => at = refr,
                        Expr::RefBrack { refr, index, .. } => {
                            self.expr(index, d);
                            at = refr;
                        }
                        Expr::Var { .. } => break,
                        other => {
                            self.expr(other, d);
                            break;
                        }
                    }
                }
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.expr(i, d);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.expr(k, d);
                    self.expr(v, d);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term, d);
                self.query(query, d);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key, d);
                self.expr(value, d);
                self.query(query, d);
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr, d),
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs, d);
                self.expr(rhs, d);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k, d);
                }
                self.expr(value, d);
                self.expr(collection, d);
            }
            Expr::Var { .. } => self.reference(e),
            _ => {}
        }
    }

    /// A function call: its name must resolve as the interpreter resolves it.
    fn call(&mut self, span: &regorus::unstable::Span, fcn: &Expr) {
        let Some(path) = components(fcn) else {
            self.fail(span, "calls something that is not a function's name".into());
            return;
        };
        if path.iter().any(String::is_empty) {
            self.fail(
                span,
                format!(
                    "`{}` calls a function through a dynamic index",
                    fcn.span().text()
                ),
            );
            return;
        }
        let name = canonical(&path);
        if name == "print" {
            return;
        }
        let functions = &self.declared.functions;
        if let Some(target) = self.aliases.get(&path[0]) {
            let mut full = target.clone();
            full.extend(path[1..].iter().cloned());
            if functions.contains(&canonical(&full)) {
                return;
            }
        }
        let full = if path[0] == "data" {
            name.clone()
        } else {
            let mut full = self.package.clone();
            full.extend(path.iter().cloned());
            canonical(&full)
        };
        if functions.contains(&full) || regorus::unstable::BUILTINS.contains_key(name.as_str()) {
            return;
        }
        let local: Vec<String> = functions
            .iter()
            .filter_map(|f| {
                f.strip_prefix(&canonical(&self.package))
                    .and_then(|r| r.strip_prefix('.'))
                    .map(str::to_owned)
            })
            .collect();
        let near = local
            .iter()
            .map(String::as_str)
            .chain(regorus::unstable::BUILTINS.keys().copied())
            .chain(functions.iter().map(String::as_str))
            .filter(|c| edit_distance(c, &name) <= 2)
            .min_by_key(|c| edit_distance(c, &name));
        self.fail(
            span,
            format!(
                "`{name}` resolves to no function: no rule of package `{}` or of an import defines it, and no builtin is named so{}",
                self.package[1..].join("."),
                near.map(|n| format!("; did you mean `{n}`?")).unwrap_or_default()
            ),
        );
    }

    /// A reference rooted at `data` (or an import alias of a `data.` path)
    /// that reaches below one of the policy's packages must name a rule or
    /// what `data.json` holds.
    fn reference(&mut self, e: &Expr) {
        let Some(c) = components(e) else { return };
        let c = static_part(c);
        let path = if c.first().map(String::as_str) == Some("data") {
            c
        } else if let Some(target) = c.first().and_then(|r| self.aliases.get(r)) {
            let mut full = target.clone();
            full.extend(c[1..].iter().cloned());
            full
        } else {
            return;
        };
        let declared = self.declared;
        let known = declared.packages.iter().any(|p| is_prefix(&path, p))
            || declared
                .rules
                .iter()
                .any(|r| is_prefix(r, &path) || is_prefix(&path, r))
            || in_data(self.data, &path[1..]);
        if known {
            return;
        }
        // Named from the deepest package (or namespace of packages) it
        // goes through.
        let package = declared
            .packages
            .iter()
            .flat_map(|p| (1..=p.len()).map(move |n| &p[..n]))
            .filter(|p| p.len() < path.len() && is_prefix(p, &path))
            .max_by_key(|p| p.len())
            .unwrap_or(&path[..1]);
        // A member data.json leaves out of a document it holds below the
        // package (`data.warden.business_hours.on_call` beside the
        // `business_hours` it does hold) is an optional setting, read as
        // undefined, as OPA reads it: only a name no rule and no document
        // below the package spells is refused.
        if 1 + data_depth(self.data, &path[1..]) > package.len() {
            return;
        }
        let name = &path[package.len()];
        let near = declared
            .rules
            .iter()
            .filter(|r| r.len() > package.len() && is_prefix(package, r))
            .map(|r| &r[package.len()])
            .filter(|r| edit_distance(r, name) <= 2)
            .min_by_key(|r| edit_distance(r, name));
        let near = near.or_else(|| {
            declared
                .packages
                .iter()
                .filter(|p| p.len() > package.len() && is_prefix(package, p))
                .map(|p| &p[package.len()])
                .filter(|r| edit_distance(r, name) <= 2)
                .min_by_key(|r| edit_distance(r, name))
        });
        let within = if package.len() > 1 {
            format!("no rule of package `{}`", package[1..].join("."))
        } else {
            "no package, no rule".to_owned()
        };
        self.fail(
            e.span(),
            format!(
                "`{}`{} resolves to nothing: {within} declares it and data.json does not hold it{}",
                e.span().text(),
                Some(canonical(&path))
                    .filter(|c| c != e.span().text())
                    .map(|c| format!(" (`{c}`)"))
                    .unwrap_or_default(),
                near.map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default()
            ),
        );
    }
}

/// Whether `data` holds `path` (or a value a prefix of it indexes into).
/// How many leading segments of `path` data.json holds.
fn data_depth(data: &serde_json::Value, path: &[String]) -> usize {
    let mut at = data;
    for (n, p) in path.iter().enumerate() {
        match at.as_object().and_then(|o| o.get(p)) {
            Some(v) => at = v,
            None => return n,
        }
    }
    path.len()
}

fn in_data(data: &serde_json::Value, path: &[String]) -> bool {
    let mut at = data;
    for p in path {
        match at {
            serde_json::Value::Object(o) => match o.get(p) {
                Some(v) => at = v,
                None => return false,
            },
            _ => return true,
        }
    }
    true
}
