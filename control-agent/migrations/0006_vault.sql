-- Warden control agent, schema step 6: the vault (control-agent/src/vault),
-- shared by the agents on one database. Nothing here is in clear: data
-- keys are kept wrapped by a master key (which never leaves the agents'
-- key file or KMS), tokens and secret values sealed under a tenant's data
-- key with AES-256-GCM (nonce ‖ ciphertext ‖ tag), bound to their row's
-- key, so a row copied under another principal or name does not open.
--
-- Writes are compare-and-set in one statement each (no turn, no advisory
-- lock): a connection is rewritten only WHERE its `version` is the one
-- the writer read, and a refresh is marked only WHERE no other holder's
-- mark runs past now. Times are seconds since the epoch.

-- Each tenant's data keys: a tenant's newest version seals new writes.
CREATE TABLE warden_vault_keys (
    tenant text NOT NULL,
    version bigint NOT NULL,
    master text NOT NULL,
    wrapped bytea NOT NULL,
    PRIMARY KEY (tenant, version)
);

-- One principal's credential for one server.
CREATE TABLE warden_vault_connections (
    tenant text NOT NULL,
    principal text NOT NULL,
    server text NOT NULL,
    id text NOT NULL,
    provider text NOT NULL,
    scopes text[] NOT NULL,
    person text NOT NULL,
    created bigint NOT NULL,
    refreshed bigint NOT NULL,
    expires_at bigint NOT NULL,
    dek_version bigint NOT NULL,
    tokens bytea NOT NULL,
    version bigint NOT NULL,
    refresh_holder text,
    refresh_until bigint,
    PRIMARY KEY (tenant, principal, server)
);
CREATE INDEX warden_vault_connections_server ON warden_vault_connections (server);

-- The bundle's static secrets (`credentials: {vault: name}`).
CREATE TABLE warden_vault_secrets (
    name text PRIMARY KEY,
    tenant text NOT NULL,
    dek_version bigint NOT NULL,
    value bytea NOT NULL,
    updated bigint NOT NULL,
    version bigint NOT NULL
);
