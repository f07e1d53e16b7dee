-- Warden control agent, schema step 1: the bundle store, approvals, and
-- what agents on one database coordinate with (generations, leases).

-- Each domain's generation: bumped by every turn that changed it, so an
-- agent whose memory is older reloads before it changes anything.
CREATE TABLE warden_generation (
    domain text PRIMARY KEY,
    gen bigint NOT NULL
);

-- Which agent holds each lease (the lock itself is an advisory lock).
CREATE TABLE warden_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    since timestamptz NOT NULL
);

-- JSON is kept as text, not jsonb: jsonb refuses a string holding U+0000,
-- which what people type (a registry definition, a reason) may carry, and
-- the store would then refuse to keep a change the files keep.

-- Small documents kept whole: the highest sequence, what is served, the
-- rollout, the kill switch and its log, the registry.
CREATE TABLE warden_documents (
    name text PRIMARY KEY,
    body text NOT NULL
);

-- The org revisions' history, in order.
CREATE TABLE warden_history (
    pos bigserial PRIMARY KEY,
    seq bigint NOT NULL,
    entry text NOT NULL
);

-- Each revision's archives: as built (signed) and its source. Two agents
-- never keep two revisions under one sequence.
CREATE TABLE warden_revisions (
    seq bigint PRIMARY KEY,
    built bytea NOT NULL,
    source bytea NOT NULL
);

-- The change record: newest last; bounded by the store (oldest deleted).
CREATE TABLE warden_changes (
    id bigserial PRIMARY KEY,
    bytes integer NOT NULL,
    line text NOT NULL
);

-- The registry's events: each step of a server's life.
CREATE TABLE warden_registry_events (
    id bigserial PRIMARY KEY,
    bytes integer NOT NULL,
    server text NOT NULL,
    event text NOT NULL
);

-- Tenants' layers: each revision's source, the history, the state.
CREATE TABLE warden_layers (
    tenant text NOT NULL,
    seq bigint NOT NULL,
    source bytea NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE TABLE warden_layer_history (
    pos bigserial PRIMARY KEY,
    tenant text NOT NULL,
    entry text NOT NULL
);
CREATE INDEX warden_layer_history_tenant ON warden_layer_history (tenant, pos);
CREATE TABLE warden_layer_state (
    tenant text PRIMARY KEY,
    state text NOT NULL
);

-- Approvals, by id (held arguments included: for approvers only).
CREATE TABLE warden_approvals (
    id text PRIMARY KEY,
    approval jsonb NOT NULL
);
