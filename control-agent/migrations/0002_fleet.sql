-- Warden control agent, schema step 2: the fleet view agents on one
-- database share (each gateway's last report, the instances heard under
-- each id, what their bundle fetches were answered with), so that every
-- agent's view and canary judge see every gateway, whichever agent it
-- reports to. Times are the database's clock. `xid`: the transaction that
-- last wrote the row; an agent reads the rows written since it last
-- looked by it (see control-agent/src/store/fleet_shared.rs).
-- Bounded as the agent's memory is: at most 10,000 gateways, 8 instances
-- and 8 fetches an id. JSON is kept as text (as in step 1): jsonb refuses
-- a string holding U+0000, which a gateway's report may carry.

CREATE SEQUENCE warden_fleet_version;

CREATE TABLE warden_fleet (
    id text PRIMARY KEY,
    report text NOT NULL,
    seen timestamptz NOT NULL,
    rate double precision NOT NULL,
    restarts bigint NOT NULL,
    jumps bigint NOT NULL,
    -- Drawn anew by every report (from warden_fleet_version: a row
    -- forgotten and written again never takes a version back): one is
    -- written only over the version its figures were computed from.
    version bigint NOT NULL,
    xid xid8 NOT NULL
);
CREATE INDEX warden_fleet_xid ON warden_fleet (xid);

CREATE TABLE warden_fleet_sightings (
    id text NOT NULL,
    instance text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    -- When this instance was last heard interleaving with another.
    conflict_at timestamptz,
    xid xid8 NOT NULL,
    PRIMARY KEY (id, instance)
);
CREATE INDEX warden_fleet_sightings_xid ON warden_fleet_sightings (xid);

CREATE TABLE warden_fleet_fetches (
    id text NOT NULL,
    revision text NOT NULL,
    -- The labels as JSON (keys in order).
    labels text NOT NULL,
    -- '' for a gateway that names no instance.
    instance text NOT NULL,
    at timestamptz NOT NULL,
    xid xid8 NOT NULL,
    PRIMARY KEY (id, revision, labels, instance)
);
CREATE INDEX warden_fleet_fetches_xid ON warden_fleet_fetches (xid);
