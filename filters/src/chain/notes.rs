//! What filters leave for each other, for `plan_request` and for the audit
//! record while judging one message: [`Notes`] and the note types each guard
//! writes into it (DLP findings, the task a message names, the approval a
//! call needs, where the shadow policy disagreed), and the [`Hold`]s kept
//! until the exchange ends. The guards import these types from here, so the
//! seam never imports a guard.

use warden_config::access::Risk;

use crate::engines::policy::ApprovalAsk;

/// What filters write while judging one message: findings for the audit
/// record, and what they hold until the exchange ends (concurrency slots,
/// released when dropped). The chain drops the holds a message took when a
/// later filter refuses it.
#[derive(Debug, Default)]
pub struct Notes {
    /// What DLP found (rule, path, action — never the text).
    pub findings: Vec<FindingNote>,
    /// The task this message names or creates, as the task filter (which
    /// runs before policy, pins and schemas) found it.
    pub task: Option<TaskNote>,
    /// The policy's `require_approval` for this call (read by the approval
    /// filter, which runs last).
    pub approval_asked: Option<ApprovalAsk>,
    /// The approval this call needs before it may be forwarded (see
    /// `approval`): `plan_request` holds it.
    pub approval: Option<ApprovalNeed>,
    /// Where the bundle's shadow rule disagreed with the enforced one.
    pub shadow: Option<ShadowNote>,
    /// What the flow guard saw of a request: the flow's state and the
    /// call's labels (for the policy input and the audit record).
    pub flow: Option<crate::engines::flow::FlowNote>,
    /// What the anomaly guard saw of a call: its principal's behaviour
    /// signals (for the policy input and the audit record).
    pub anomaly: Option<crate::engines::anomaly::AnomalyNote>,
    /// What a reply added to its flow (to share and to audit).
    pub flow_out: Option<crate::engines::flow::FlowOut>,
    /// A notice for the audit record (a deprecated server's call: see
    /// `registry`).
    pub notice: Option<String>,
    /// The tasks a reply hands out as new, each to be claimed for its
    /// holder fleet-wide before the reply leaves (see [`TaskClaim`]).
    pub task_claims: Vec<TaskClaim>,
    /// Task ids a server handed a second holder (a reused id): burnt
    /// fleet-wide whatever becomes of the reply (see [`ClaimKind::Burn`]).
    pub task_burns: Vec<TaskClaim>,
    /// The tool or prompt a request names is neither one the bundle writes
    /// nor one this replica has seen its server list (the names guard's
    /// finding, before the policy): the policy also judges how a folding
    /// server reads it.
    pub unlisted_name: bool,
    /// A completion of a resource template's argument: what the reply's
    /// values are judged against ([`Completing`], written compactly: see
    /// [`Completing::to_text`]).
    pub completing: Option<String>,
    pub(super) holds: Vec<Hold>,
}

/// A completion of a resource template's argument (`completion/complete`
/// with a `ref/resource`): each value its reply offers makes a URI of the
/// template, judged as a read of it before the client sees the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Completing {
    /// The template (`ref.uri`).
    pub template: String,
    /// The argument completed (`argument.name`).
    pub argument: String,
    /// The other arguments already chosen (`context.arguments`).
    pub context: Vec<(String, String)>,
}

impl Completing {
    /// The most bytes [`Completing::to_text`] may take: the reply ledger
    /// keeps it where a call keeps its tool's name and argument digest,
    /// within the bytes the memory budget counts for an entry.
    pub const MAX_TEXT: usize = 120;

    /// The completion as the ledger keeps it (a JSON array); `None` when
    /// longer than [`Completing::MAX_TEXT`].
    pub fn to_text(&self) -> Option<String> {
        let t = serde_json::to_string(&(&self.template, &self.argument, &self.context)).ok()?;
        (t.len() <= Self::MAX_TEXT).then_some(t)
    }

    /// The URIs `value` makes of the template (see
    /// `protocol::uri_template::expand`), the other variables taken from
    /// the context; `None` when one of them has no value there (the URI
    /// the server completes in is then unknown) or the template is not
    /// well formed.
    pub fn uris(&self, value: &str) -> Option<Vec<String>> {
        let vars = crate::protocol::uri_template::variables(&self.template)?;
        let of = |name: &str| -> Option<String> {
            if name == self.argument {
                return Some(value.to_owned());
            }
            self.context
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, x)| x.clone())
        };
        if vars.iter().any(|v| of(v).is_none()) {
            return None;
        }
        crate::protocol::uri_template::expand(&self.template, &of)
    }

    /// The completion [`Completing::to_text`] wrote.
    pub fn from_text(t: &str) -> Option<Completing> {
        let (template, argument, context) = serde_json::from_str(t).ok()?;
        Some(Completing {
            template,
            argument,
            context,
        })
    }
}

impl Notes {
    /// Keeps `h` until the exchange ends.
    pub fn hold(&mut self, h: Hold) {
        self.holds.push(h);
    }

    /// The holds taken so far, to keep for the exchange.
    pub fn take_holds(&mut self) -> Vec<Hold> {
        std::mem::take(&mut self.holds)
    }
}

/// Something held while a call is in flight (a concurrency slot); released
/// when dropped, so every exit path — response, error, client disconnect,
/// upstream reset — gives it back.
pub struct Hold(pub Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

impl PartialEq for Hold {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

/// One finding as the audit records it: never the matched text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingNote {
    pub detector: String,
    pub rule: String,
    pub path: String,
    pub action: &'static str,
}

/// A task a server handed out as new (a `tools/call` task handle): the
/// holder it was sealed for claims it in the fleet's shared store, where a
/// task another holder claimed first (through any replica) withholds the
/// reply. Digests only: the store learns neither ids nor principals.
///
/// A task id the server hands a second holder is burnt: the server reused
/// it (it restarted, its counter wrapped) or hands one task to two, and the
/// gateway cannot tell which. The id then names no task for anyone — the
/// first holder's handle would otherwise reach the second's new task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskClaim {
    /// What the claim asks of the store.
    pub kind: ClaimKind,
    /// The task (server and the server's id).
    pub task: String,
    /// Its holder (see `tasks::holder`).
    pub holder: String,
    /// The server, the server's id and the holder, in this process only:
    /// what this replica's memory of the task is keyed by (see
    /// `TaskOwners::forget`).
    pub(crate) local: (String, String, String),
}

/// What a [`TaskClaim`] asks of the fleet's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A reply hands the task out: the holder's, unless another holds it
    /// (then the id is burnt).
    New,
    /// The holder's own request about its task renews its claim: refused
    /// once another holder's claim, or a burn, stands.
    Renew,
    /// The id was handed to a second holder: no holder's any more.
    Burn,
}

impl ClaimKind {
    /// As the store's script reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::New => "new",
            ClaimKind::Renew => "renew",
            ClaimKind::Burn => "burn",
        }
    }
}

/// What the task filter leaves for later filters and the audit record about
/// the task a message names or creates.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskNote {
    /// Links every record about one task to the call that created it
    /// (`tk_` and 16 hex digits of a keyed digest; reveals no id).
    pub link: String,
    /// The tool whose call created the task, when known.
    pub tool: Option<String>,
}

/// A call that may go on only once approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeed {
    /// Distinct approvers needed.
    pub approvers: u8,
    /// Why (the policy's reason, or `risk_tier:<TIER>`).
    pub reason: String,
    pub risk: Risk,
    pub tool: String,
    /// `sha256:<hex>` of the canonical arguments (`{}` when absent).
    pub args_digest: String,
    /// The canonical arguments, shown to approvers (after the chain's
    /// redactions: what the upstream would receive).
    pub arguments: String,
    /// `sha256:<hex>` binding principal, server, tool and arguments.
    pub binding: String,
    /// Who the approval is bound to, as the claim names them: the
    /// principal's id, or for an unauthenticated caller `anonymous~` and a
    /// digest of its session (or address): anonymous callers are many, and
    /// one must not take an approval granted to another's call.
    pub holder: String,
    /// The tenants whose own approval tiers asked for this approval (a
    /// tenant's layer on a call in its scope): their approvers decide it,
    /// not only the caller's tenant's.
    pub for_tenants: Vec<String>,
}

/// Where the shadow rule disagreed with the enforced one on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowNote {
    /// What the enforced rule decided.
    pub enforced_allow: bool,
    pub enforced_reason: String,
    /// What the shadow rule would have decided.
    pub shadow_allow: bool,
    pub shadow_reason: String,
}
