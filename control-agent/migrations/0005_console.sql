-- Warden control agent, schema step 5: console sessions, shared by the
-- agents on one database (a login on one agent works through every other,
-- and a logout on one ends the session on all). Keyed by the SHA-256 of
-- the cookie: the table gives no usable cookie.
CREATE TABLE warden_console_sessions (
    digest bytea PRIMARY KEY,
    who text NOT NULL,
    person jsonb NOT NULL,
    csrf text NOT NULL,
    flash text,
    created timestamptz NOT NULL DEFAULT now(),
    used timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX warden_console_sessions_who ON warden_console_sessions (who, created);
