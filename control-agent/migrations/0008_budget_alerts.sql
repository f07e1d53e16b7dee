-- Warden control agent, schema step 8: the budget alerts waiting for the
-- notifier (control-agent/src/audit/alerts.rs). Ingest queues the alerts
-- a record carries in the transaction that first stores the record; the
-- agent holding the jobs lease delivers them to the webhooks that hear
-- of `budget_alerts` (`serve --notify`), keeping which took each.
--
-- `key`: the gateway, the line's hash and the alert's place in the line
-- (the same on every agent for the same line); `alert`: the alert and its
-- record's fields as JSON; `sent`: the webhooks that answered 2xx;
-- `done_us`: when every webhook that wants it took it or was given up on
-- (forgotten a day later).
CREATE TABLE warden_budget_alerts (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    queued_us bigint NOT NULL,
    alert text NOT NULL,
    sent text[] NOT NULL DEFAULT '{}',
    done_us bigint
);
CREATE INDEX warden_budget_alerts_waiting ON warden_budget_alerts (id) WHERE done_us IS NULL;
CREATE INDEX warden_budget_alerts_done ON warden_budget_alerts (done_us) WHERE done_us IS NOT NULL;
