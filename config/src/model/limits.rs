//! Limits on what one request may carry, the memory budget every growing
//! table shares (`limits:`), and the timeouts (`timeouts:`, also per server).

use std::num::NonZeroU32;
use std::time::Duration;

use crate::error::Problems;
use crate::fields::{duration, nonzero, size};
use crate::raw;

pub const DEFAULT_MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_SSE_EVENT: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_JSON_DEPTH: u32 = 64;
pub const DEFAULT_MAX_BATCH_LEN: u32 = 64;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub max_sse_event: usize,
    pub max_json_depth: NonZeroU32,
    pub max_batch_len: NonZeroU32,
    pub max_header_bytes: usize,
    /// Slowest request body accepted (bytes per second, after a grace period).
    pub min_request_body_rate: usize,
    /// Slowest a client may read its replies (bytes per second, counted
    /// only while a write to it waits).
    pub min_response_rate: usize,
    /// What the tables that grow with sessions and calls share.
    pub memory: MemoryBudget,
}

/// The tables that grow with sessions or calls, each bounded by its share
/// of one memory budget (`limits.memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Request ids remembered per session, to judge replies that arrive on
    /// another exchange (and the server→client requests owed an answer).
    Ledger,
    /// Which replica serves each session, and its owner.
    Sessions,
    /// Quota counters.
    Quotas,
    /// Runaway budgets and loop counters per session.
    Runaway,
    /// Who created each task.
    Tasks,
    /// Requests per principal for `/top`.
    Live,
    /// Information-flow states per session or principal (`flows`). It
    /// never forgets a live state (one would come back clean): when full,
    /// a reply that would raise a state it does not hold is withheld.
    Flows,
    /// The tool and prompt names servers listed, in every spelling a peer
    /// may read them as (the names guard). When full, a listed entry it
    /// cannot record is not shown.
    Names,
    /// The fleet's just-in-time grants the agent lists (`input.principal.
    /// grants`). When full, the grants ending last are kept.
    Grants,
    /// Credentials fetched from the agent's vault, each for a few seconds
    /// (weighed by their bytes: an entry is one unit of
    /// [`Table::entry_bytes`] per 512 bytes it holds). When full, the
    /// least used go first and are fetched again.
    Credentials,
    /// Money spent per budget holder (`budgets:`) this period, in this
    /// replica. It never forgets a live counter: when full, counters of
    /// periods that are over go, and a holder it cannot hold is refused.
    Budgets,
    /// Per-principal behaviour baselines (`anomaly`). It never evicts a
    /// baseline that was used in the last 30 days: when full, a principal
    /// it cannot hold is judged as wholly new (every first-use signal
    /// raised, and `untracked`), never as normal.
    Baselines,
}

impl Table {
    pub const ALL: [Table; 12] = [
        Table::Ledger,
        Table::Sessions,
        Table::Quotas,
        Table::Runaway,
        Table::Tasks,
        Table::Live,
        Table::Flows,
        Table::Names,
        Table::Grants,
        Table::Credentials,
        Table::Budgets,
        Table::Baselines,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Ledger => "ledger",
            Table::Sessions => "sessions",
            Table::Quotas => "quotas",
            Table::Runaway => "runaway",
            Table::Tasks => "tasks",
            Table::Live => "live",
            Table::Flows => "flows",
            Table::Names => "names",
            Table::Grants => "grants",
            Table::Credentials => "credentials",
            Table::Budgets => "budgets",
            Table::Baselines => "baselines",
        }
    }

    /// Its share of the budget (per mille; the rest is headroom for what
    /// no table holds: buffers, connections, the snapshot).
    fn share(self) -> u64 {
        match self {
            Table::Ledger => 260,
            Table::Sessions => 100,
            Table::Quotas => 100,
            Table::Runaway => 100,
            Table::Tasks => 80,
            Table::Live => 20,
            Table::Flows => 40,
            Table::Names => 30,
            Table::Grants => 20,
            Table::Credentials => 10,
            Table::Budgets => 20,
            Table::Baselines => 40,
        }
    }

    /// What one entry costs, measured with its key, value and the cache's
    /// own bookkeeping (compact keys: digests, not strings; BENCHMARKS.md).
    pub fn entry_bytes(self) -> u64 {
        match self {
            Table::Ledger => 320,
            Table::Sessions => 256,
            Table::Quotas => 256,
            Table::Runaway => 256,
            Table::Tasks => 320,
            Table::Live => 256,
            // A state holds up to 16 sources (56 bytes each, an id of 19
            // bytes and a name of at most 64: `MAX_NAME` in
            // `warden_filters::engines::flow`), about 2.5 KB at most, and
            // the key and the cache's bookkeeping (the filters' test
            // `the_largest_state_fits_its_table_entry` holds it to this).
            Table::Flows => 3072,
            // A spelling of a name of up to 32 bytes with its keys in both
            // maps; longer names count as several (`ListedNames` bounds
            // the bytes too: the filters' test `listed_names_stay_in_budget`).
            Table::Names => 256,
            // A grant with its strings (ids, tenant, principal, name and
            // server of usual lengths), its key and the map's bookkeeping;
            // longer ones count as several (`Grants` bounds the bytes too:
            // the filters' test `the_table_is_bounded_in_bytes`).
            Table::Grants => 512,
            // A unit of a fetched credential's weight (its value, its
            // reference and the cache's bookkeeping, per 512 bytes).
            Table::Credentials => 512,
            // A holder's key (a 16-byte definition and its names), the
            // counter behind its lock and the map's bookkeeping.
            Table::Budgets => 256,
            // A baseline at its caps (64 servers, 256 tools, 64 hosts as
            // 8-byte hashes), its hour histogram and counters, its key and
            // the map's bookkeeping (the filters' test
            // `a_full_baseline_fits_its_table_entry` holds it to this).
            Table::Baselines => 4096,
        }
    }
}

/// One budget for every table that grows with sessions or calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub bytes: u64,
}

impl MemoryBudget {
    /// The most entries `table` keeps (never fewer than 1,000).
    pub fn entries(self, table: Table) -> u64 {
        (self.bytes / 1000 * table.share() / table.entry_bytes()).max(1000)
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget {
            bytes: DEFAULT_MEMORY,
        }
    }
}

/// The default floor of a client's read rate (`limits.min_response_rate`).
pub const DEFAULT_MIN_RESPONSE_RATE: usize = 1024;

/// The default budget: a sidecar with a 256 MiB limit keeps half of it.
pub const DEFAULT_MEMORY: u64 = 128 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
    pub stream_idle: Duration,
    pub drain: Duration,
    pub request_body: Duration,
    /// Longest time from a request header's first byte to its end.
    pub request_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(60),
            write: Duration::from_secs(30),
            // Below the keep-alive of the servers Warden fronts most (uvicorn,
            // Node and Apache close an idle connection after 5 s): a pooled
            // connection the server closes as a call is written on it fails
            // that call, which is never sent twice.
            idle: Duration::from_secs(4),
            stream_idle: Duration::from_secs(300),
            drain: Duration::from_secs(10),
            request_body: Duration::from_secs(30),
            request_header: Duration::from_secs(10),
        }
    }
}

pub(super) fn limits(rl: &raw::LimitsConfig, p: &mut Problems) -> Limits {
    let limits = Limits {
        max_request_body: size(
            p,
            "limits.max_request_body",
            &rl.max_request_body,
            DEFAULT_MAX_REQUEST_BODY,
        ),
        max_response_body: size(
            p,
            "limits.max_response_body",
            &rl.max_response_body,
            DEFAULT_MAX_RESPONSE_BODY,
        ),
        max_sse_event: size(
            p,
            "limits.max_sse_event",
            &rl.max_sse_event,
            DEFAULT_MAX_SSE_EVENT,
        ),
        max_json_depth: nonzero(
            p,
            "limits.max_json_depth",
            rl.max_json_depth,
            DEFAULT_MAX_JSON_DEPTH,
        ),
        max_batch_len: nonzero(
            p,
            "limits.max_batch_len",
            rl.max_batch_len,
            DEFAULT_MAX_BATCH_LEN,
        ),
        max_header_bytes: size(
            p,
            "limits.max_header_bytes",
            &rl.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
        ),
        min_request_body_rate: size(
            p,
            "limits.min_request_body_rate",
            &rl.min_request_body_rate,
            1024,
        ),
        min_response_rate: size(
            p,
            "limits.min_response_rate",
            &rl.min_response_rate,
            DEFAULT_MIN_RESPONSE_RATE,
        ),
        memory: MemoryBudget {
            bytes: size(p, "limits.memory", &rl.memory, DEFAULT_MEMORY as usize) as u64,
        },
    };
    if limits.memory.bytes < 8 << 20 {
        p.push("limits.memory", "must be at least 8MiB");
    }
    if limits.max_json_depth.get() > 128 {
        p.push("limits.max_json_depth", "must be at most 128");
    }
    limits
}

pub(super) fn timeouts(
    p: &mut Problems,
    base: &str,
    raw: &raw::TimeoutsConfig,
    d: Timeouts,
) -> Timeouts {
    Timeouts {
        connect: duration(p, &format!("{base}.connect"), &raw.connect, d.connect),
        read: duration(p, &format!("{base}.read"), &raw.read, d.read),
        write: duration(p, &format!("{base}.write"), &raw.write, d.write),
        idle: duration(p, &format!("{base}.idle"), &raw.idle, d.idle),
        stream_idle: duration(
            p,
            &format!("{base}.stream_idle"),
            &raw.stream_idle,
            d.stream_idle,
        ),
        drain: duration(p, &format!("{base}.drain"), &raw.drain, d.drain),
        request_body: duration(
            p,
            &format!("{base}.request_body"),
            &raw.request_body,
            d.request_body,
        ),
        request_header: duration(
            p,
            &format!("{base}.request_header"),
            &raw.request_header,
            d.request_header,
        ),
    }
}
