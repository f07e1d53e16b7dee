//! [`PolicyEngine`]: a bundle's Rego compiled once (to the VM where it
//! can be), evaluated per input with an instruction limit, behind its
//! decision cache.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regorus::Value;

use super::analysis::{
    argument_reads, key_plan, near_named_read, reads_coercible, ArgumentReads, KeyPlan,
};
use super::clock::{Clock, NEXT_ENGINE};
use super::decision::{decision_of, PolicyDecision};
use super::diagnostics::tracing_free_log;
use super::input::{input_for, PolicyInput};
use super::resolve::{unresolved, Declared};

/// Instructions one evaluation may run before it is cut off (and denies).
pub(super) const MAX_INSTRUCTIONS: usize = 2_000_000;

thread_local! {
    /// Reused for building cache keys on this thread.
    static KEY_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    /// One Rego VM per worker thread, loaded with the program of the engine
    /// that last used it on this thread (VMs are reused, never shared).
    static VM: std::cell::RefCell<Option<(u64, regorus::rvm::vm::RegoVM)>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether a string (or an object key) anywhere in `v` holds serde's
/// private big-number marker; a document deeper than the JSON limits let
/// through counts as holding it.
fn holds_number_marker(v: &Value, depth: usize) -> bool {
    if depth > 160 {
        return true;
    }
    match v {
        Value::String(s) => text_holds_number_marker(s, 0),
        Value::Array(a) => a.iter().any(|x| holds_number_marker(x, depth + 1)),
        Value::Set(a) => a.iter().any(|x| holds_number_marker(x, depth + 1)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| holds_number_marker(k, depth + 1) || holds_number_marker(x, depth + 1)),
        _ => false,
    }
}

/// Whether `text`, or JSON it spells (a builtin may read it as JSON, and
/// that JSON's strings again), names the marker: as written, or with its
/// letters escaped (`\u0070rivate`), which only a parse reveals.
fn text_holds_number_marker(text: &str, depth: usize) -> bool {
    const MARKER: &[u8] = b"private::Number";
    if memchr::memmem::find(text.as_bytes(), MARKER).is_some() {
        return true;
    }
    if memchr::memchr(b'\\', text.as_bytes()).is_none() {
        return false;
    }
    if depth >= 8 {
        return true;
    }
    // Escapes decoded leniently, whether or not the text is JSON a parser
    // accepts: regorus builds the number as soon as it has read the
    // marker's member, before a later syntax error is seen.
    let decoded = unescaped(text);
    decoded != text && text_holds_number_marker(&decoded, depth + 1)
}

/// `text` with JSON string escapes decoded wherever they stand (a lone or
/// malformed one kept as written).
fn unescaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('u') => {
                chars.next();
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16) {
                    Ok(n) if hex.len() == 4 => {
                        for _ in 0..4 {
                            chars.next();
                        }
                        out.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                    }
                    _ => out.push_str("\\u"),
                }
            }
            Some(e @ ('"' | '\\' | '/')) => {
                chars.next();
                out.push(e);
            }
            Some(e @ ('b' | 'f' | 'n' | 'r' | 't')) => {
                chars.next();
                out.push(match e {
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    _ => '\t',
                });
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// Wall-clock time one evaluation may take, on the VM or the interpreter
/// (a policy the VM cannot compile, such as one using `with`, runs on the
/// interpreter, which has no instruction limit of its own).
const MAX_EVALUATION: std::time::Duration = std::time::Duration::from_millis(250);

/// Installs [`MAX_EVALUATION`] as regorus' process-wide time limit.
fn limit_evaluation_time() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        regorus::utils::limits::set_fallback_execution_timer_config(Some(
            regorus::utils::limits::ExecutionTimerConfig {
                limit: MAX_EVALUATION,
                check_interval: std::num::NonZeroU32::new(64).expect("non-zero"),
            },
        ));
    });
}

/// Compiled policy plus its decision cache; one per snapshot.
pub struct PolicyEngine {
    id: u64,
    compiled: regorus::CompiledPolicy,
    /// The policy compiled to regorus' VM; `None` when it uses something the
    /// VM compiler does not support (the interpreter then evaluates it).
    program: Option<Arc<regorus::rvm::program::Program>>,
    data: Value,
    clock: Clock,
    plan: Option<KeyPlan>,
    /// How the modules read the arguments ([`argument_reads`]).
    argument_reads: ArgumentReads,
    /// The modules' and data's texts a rule could compare a resource URI
    /// with, as written and read loosely (see `resource_uri::near_literal`).
    uri_literals: crate::protocol::resource_uri::UriLiterals,
    cache: Option<moka::sync::Cache<Box<[u8]>, PolicyDecision, foldhash::fast::RandomState>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("plan", &self.plan)
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

/// A Rego compile failure, located where regorus could tell.
#[derive(Debug, Clone)]
pub struct PolicyCompileError {
    pub file: String,
    pub message: String,
}

impl PolicyEngine {
    /// Compiles `modules` (path → text) with `data` once. `cache_capacity` 0
    /// turns the cache off.
    pub fn compile(
        modules: &BTreeMap<String, String>,
        data: &serde_json::Value,
        entrypoint: &str,
        timezone: &str,
        cache_capacity: u64,
    ) -> Result<Self, PolicyCompileError> {
        // Rego unit tests (`*_test.rego`) are for `warden policy test`, not the data plane.
        let modules: BTreeMap<String, String> = modules
            .iter()
            .filter(|(p, _)| !p.ends_with("_test.rego"))
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect();
        let modules = &modules;
        let clock = Clock::new(timezone).map_err(|message| PolicyCompileError {
            file: "warden.yaml".into(),
            message: format!("policy.timezone: {message}"),
        })?;
        // Each module alone first, so a syntax error names its file; then
        // all of them, read as regorus reads them.
        let mut parsed = regorus::Engine::new();
        for (path, text) in modules {
            let mut e = regorus::Engine::new();
            if let Err(err) = e
                .add_policy(path.clone(), text.clone())
                .and_then(|_| parsed.add_policy(path.clone(), text.clone()))
            {
                return Err(PolicyCompileError {
                    file: path.clone(),
                    message: err.to_string(),
                });
            }
        }
        let parsed = parsed.get_modules().clone();
        let declared = Declared::of(&parsed);
        let mods: Vec<regorus::PolicyModule> = modules
            .iter()
            .map(|(p, t)| regorus::PolicyModule {
                id: p.as_str().into(),
                content: t.as_str().into(),
            })
            .collect();
        // An entrypoint that names no rule is a mistake in warden.yaml, not
        // in the modules: say so, and which rule was probably meant.
        if let Some(message) = declared.missing_entrypoint(entrypoint) {
            return Err(PolicyCompileError {
                file: "warden.yaml".into(),
                message,
            });
        }
        // A call or a `data.` reference that resolves to nothing would
        // deny every call it is reached on with `policy_error`.
        if let Some(u) = unresolved(&parsed, &declared, data) {
            return Err(PolicyCompileError {
                file: u.file,
                message: u.message,
            });
        }
        limit_evaluation_time();
        let data_json = data;
        let data = Value::from(data.clone());
        let compiled =
            regorus::compile_policy_with_entrypoint(data.clone(), &mods, entrypoint.into())
                .map_err(|e| PolicyCompileError {
                    file: modules.keys().next().cloned().unwrap_or_default(),
                    message: format!("{e:#}"),
                })?;
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
            &compiled,
            &[entrypoint],
        )
        .ok();
        let texts: Vec<&str> = modules.values().map(String::as_str).collect();
        let plan = key_plan(&texts);
        let argument_reads = argument_reads(&texts);
        let uri_literals = uri_literals(&texts, data_json);
        let cache = (plan.is_some() && cache_capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cache_capacity)
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        Ok(PolicyEngine {
            id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            compiled,
            program,
            data,
            clock,
            plan,
            argument_reads,
            uri_literals,
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether `args` holds a near-name of an argument the policy reads
    /// (see [`near_named_read`]); `false` when it reads none.
    pub fn near_named_argument(&self, args: &serde_json::Value) -> bool {
        near_named_read(&self.argument_reads, args)
    }

    /// Whether resource URI `uri` holds, read loosely, a text of the
    /// policy's that no spelling of it holds as written (see
    /// `resource_uri::near_literal`): a rule would judge one resource
    /// while a server reads another.
    pub fn near_uri_literal(&self, uri: &str) -> bool {
        self.uri_literals.near(uri)
    }

    /// Whether an argument the policy reads holds a string a lax reader
    /// coerces to another type (see [`reads_coercible`]).
    pub fn reads_coercible_argument(&self, args: &serde_json::Value) -> bool {
        reads_coercible(&self.argument_reads, args)
    }

    /// Whether the policy reads any argument by name, or the arguments
    /// opaquely.
    pub fn reads_arguments(&self) -> bool {
        !self.argument_reads.paths.is_empty() || self.argument_reads.opaque.is_some()
    }

    /// Whether decisions can be cached (no nondeterministic builtin).
    pub fn cacheable(&self) -> bool {
        self.cache.is_some()
    }

    /// `(hits, misses)` since the snapshot was built.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Evaluates Rego for this input, bypassing the cache.
    pub fn evaluate(&self, i: &PolicyInput<'_>) -> PolicyDecision {
        match input_for(i, &self.clock, self.plan.as_ref()) {
            Some(input) => self.evaluate_value(input),
            None => PolicyDecision::deny("policy_arguments_unreadable"),
        }
    }

    /// Whether evaluation runs on regorus' VM (else on its interpreter).
    pub fn compiled_to_vm(&self) -> bool {
        self.program.is_some()
    }

    /// Evaluates a ready-made input document (used by `warden policy eval`).
    pub fn evaluate_value(&self, input: Value) -> PolicyDecision {
        // A string holding serde's private big-number marker turns into a
        // number of any size when a builtin reads it as JSON (`to_number`,
        // `json.unmarshal`, `units.parse`): `1e9999999` takes seconds, a
        // larger exponent gigabytes, inside one instruction no limit sees.
        if holds_number_marker(&input, 0) {
            return PolicyDecision::deny("policy_arguments_unreadable");
        }
        let Some(program) = &self.program else {
            return self.evaluate_interpreted(input);
        };
        // A builtin that panics on what a request says (regorus slices a
        // duration's unit at a byte inside a character) is a denial, never
        // a dropped connection; the thread's VM is then built afresh.
        let run = std::panic::AssertUnwindSafe(|| {
            VM.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.as_ref().is_none_or(|(id, _)| *id != self.id) {
                    let mut vm = regorus::rvm::vm::RegoVM::new();
                    vm.set_max_instructions(MAX_INSTRUCTIONS);
                    vm.load_program(program.clone());
                    vm.set_data(self.data.clone())?;
                    *slot = Some((self.id, vm));
                }
                let Some((_, vm)) = slot.as_mut() else {
                    unreachable!("the slot was just filled")
                };
                vm.set_input(input);
                vm.execute()
            })
        });
        match std::panic::catch_unwind(run) {
            Ok(Ok(v)) => decision_of(&v),
            Ok(Err(e)) => {
                tracing_free_log(&format!("{e:#}"));
                PolicyDecision::deny("policy_error")
            }
            Err(_) => {
                VM.with(|cell| *cell.borrow_mut() = None);
                tracing_free_log("policy evaluation panicked");
                PolicyDecision::deny("policy_error")
            }
        }
    }

    /// Evaluates with regorus' interpreter (the reference the VM is checked against).
    pub fn evaluate_interpreted(&self, input: Value) -> PolicyDecision {
        let run = std::panic::AssertUnwindSafe(|| self.compiled.eval_with_input(input));
        match std::panic::catch_unwind(run) {
            Ok(Ok(v)) => decision_of(&v),
            Ok(Err(e)) => {
                tracing_free_log(&format!("{e:#}"));
                PolicyDecision::deny("policy_error")
            }
            Err(_) => {
                tracing_free_log("policy evaluation panicked");
                PolicyDecision::deny("policy_error")
            }
        }
    }

    /// The decision, from the cache when an equal input was decided before.
    pub fn decide(&self, i: &PolicyInput<'_>) -> PolicyDecision {
        let (Some(cache), Some(plan)) = (&self.cache, &self.plan) else {
            return self.evaluate(i);
        };
        let looked = KEY_BUF.with(|buf| {
            let mut key = buf.borrow_mut();
            if !plan.key(i, &self.clock, &mut key) {
                return Err(None);
            }
            match cache.get(key.as_slice()) {
                Some(d) => Ok(d),
                None => Err(Some(Box::<[u8]>::from(key.as_slice()))),
            }
        });
        match looked {
            Ok(d) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                d
            }
            Err(key) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let d = self.evaluate(i);
                if let Some(k) = key {
                    cache.insert(k, d.clone());
                }
                d
            }
        }
    }
}

/// Texts a rule could compare a resource URI with: the modules' string
/// literals and the data's strings (object keys included: `data.blocked[uri]`)
/// that look like one (`resource_uri::uri_like`); at most
/// [`MAX_URI_LITERALS`] (a bundle with more is told so in the log).
fn uri_literals(
    modules: &[&str],
    data: &serde_json::Value,
) -> crate::protocol::resource_uri::UriLiterals {
    use crate::protocol::resource_uri::uri_like;
    fn walk(v: &serde_json::Value, depth: usize, out: &mut Vec<String>) {
        if out.len() > MAX_URI_LITERALS || depth > 32 {
            return;
        }
        match v {
            serde_json::Value::String(s) if uri_like(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, depth + 1, out)),
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    if uri_like(k) {
                        out.push(k.clone());
                    }
                    walk(x, depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut texts: Vec<String> = super::string_literals(modules)
        .into_iter()
        .filter(|l| uri_like(l))
        .collect();
    walk(data, 0, &mut texts);
    texts.sort();
    texts.dedup();
    if texts.len() > MAX_URI_LITERALS {
        // Filters have no logging dependency: stderr is the gateway's log.
        eprintln!(
            "warden: the policy holds more than {MAX_URI_LITERALS} URI-like texts; only the \
             first {MAX_URI_LITERALS} are compared with resource URIs read loosely"
        );
        texts.truncate(MAX_URI_LITERALS);
    }
    crate::protocol::resource_uri::UriLiterals::new(&texts)
}

/// URI-like texts a bundle's policy keeps for `near_uri_literal`.
const MAX_URI_LITERALS: usize = 10_000;
