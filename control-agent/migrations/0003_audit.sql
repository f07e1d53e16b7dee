-- Warden control agent, schema step 3: the fleet's audit store, shared by
-- every agent on the database (control-agent/src/audit/pg/, and
-- docs/audit-store.md).

-- Record ids: the order records arrived in, across agents (searches are
-- newest first by id, pages go on `before` an id). One at a time (no
-- per-connection cache), so that two agents' ids interleave as their
-- batches did.
CREATE SEQUENCE warden_audit_id AS bigint;

-- The records, partitioned by day on the time the store keeps them by
-- (`ts_us`: the record's own `ts`, or the time it arrived when its `ts`
-- is later). The partitions are made by the agents (a day's partition
-- `warden_audit_pYYYYMMDD`, made ahead of time; an older day's when a
-- record of it arrives) and dropped whole by the retention.
CREATE TABLE warden_audit (
    id bigint NOT NULL,
    gateway text NOT NULL,
    seq bigint NOT NULL,
    -- The record's `ts` as it bears it.
    ts text NOT NULL,
    ts_us bigint NOT NULL,
    principal text NOT NULL,
    tenant text NOT NULL,
    -- The tenant scope key (what viewers' scopes and `tenant=` compare).
    tenant_key text NOT NULL,
    server text NOT NULL,
    tool text,
    method text,
    direction text NOT NULL,
    outcome text NOT NULL,
    decided_by text,
    reason text,
    risk text,
    trace_id text NOT NULL,
    approval_id text,
    latency_us bigint,
    -- The DLP detectors that found something (a JSON list).
    dlp text,
    -- A deprecated server's notice, when the record carries one as text.
    notice text,
    prev bytea NOT NULL,
    -- The SHA-256 of the line (a stub's: the one it declares).
    hash bytea NOT NULL,
    -- The line, byte for byte as the gateway wrote it.
    raw text NOT NULL
) PARTITION BY RANGE (ts_us);

-- A line is held once per gateway: its hash, at the time it is kept by
-- (a line's time never changes; a line kept at its arrival is also in
-- warden_audit_moved).
CREATE UNIQUE INDEX warden_audit_line ON warden_audit (gateway, hash, ts_us);
-- The chains, in order (verification) and a seq's lines (its links).
CREATE INDEX warden_audit_chain ON warden_audit (gateway, seq, id);
-- Searches: newest first by id, one filter at a time, the time and the
-- tenant read from the index (a page and its count never touch the
-- records that do not match).
CREATE INDEX warden_audit_recent ON warden_audit (id) INCLUDE (ts_us, tenant_key);
CREATE INDEX warden_audit_ts ON warden_audit (ts_us, id) INCLUDE (tenant_key);
CREATE INDEX warden_audit_gateway ON warden_audit (gateway, id) INCLUDE (ts_us, tenant_key);
CREATE INDEX warden_audit_principal ON warden_audit (principal, id) INCLUDE (ts_us, tenant_key);
CREATE INDEX warden_audit_tenant ON warden_audit (tenant_key, id) INCLUDE (ts_us);
CREATE INDEX warden_audit_server ON warden_audit (server, id) INCLUDE (ts_us, tenant_key);
CREATE INDEX warden_audit_tool ON warden_audit (tool, id) INCLUDE (ts_us, tenant_key);
CREATE INDEX warden_audit_outcome ON warden_audit (outcome, id) INCLUDE (ts_us, tenant_key);
CREATE INDEX warden_audit_trace ON warden_audit (trace_id);
CREATE INDEX warden_audit_approval ON warden_audit (approval_id) WHERE approval_id IS NOT NULL;

-- Each partition: its range [lo, hi) in unix microseconds, the records it
-- holds (kept with every ingest and deletion, in their transaction), the
-- most it ever held, and its size on disk as last measured.
CREATE TABLE warden_audit_partitions (
    lo bigint PRIMARY KEY,
    hi bigint NOT NULL,
    name text NOT NULL UNIQUE,
    rows bigint NOT NULL DEFAULT 0,
    peak bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    measured_rows bigint
);

-- Lines kept at their arrival rather than at their own `ts` (stamped in
-- the future when they arrived): where a resend finds them.
CREATE TABLE warden_audit_moved (
    gateway text NOT NULL,
    hash bytea NOT NULL,
    ts_us bigint NOT NULL,
    PRIMARY KEY (gateway, hash)
);
CREATE INDEX warden_audit_moved_ts ON warden_audit_moved (ts_us);
