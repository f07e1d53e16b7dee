-- Warden control agent, schema step 7: the cost of a priced call, read
-- from its record's `cost` member at ingest (control-agent/src/audit/
-- cost.rs) into columns that spend reports add up and searches filter on
-- (docs/audit-store.md).
--
-- `cost_micros`: the amount in millionths of the currency's unit (NULL:
-- unpriced, or a cost that could not be read); `currency`: its ISO 4217
-- code; `team`: the caller's team (`cost.team`).
ALTER TABLE warden_audit
    ADD COLUMN cost_micros bigint,
    ADD COLUMN currency text,
    ADD COLUMN team text;

-- The records stored before this step, filled by the rules ingest
-- applies: an amount of one to twelve digits and at most six places, a
-- currency of three capital letters, a non-empty team. Only lines naming
-- `cost` are read; a line JSON cannot read back (jsonb refuses U+0000,
-- which a record's text may hold) is left unpriced.
CREATE FUNCTION pg_temp.warden_cost(raw text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN raw::jsonb -> 'cost';
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

UPDATE warden_audit a SET
    cost_micros = CASE
        WHEN jsonb_typeof(c.cost -> 'amount') = 'string'
         AND c.cost ->> 'amount' ~ '^[0-9]{1,12}(\.[0-9]{1,6})?$'
         AND jsonb_typeof(c.cost -> 'currency') = 'string'
         AND c.cost ->> 'currency' ~ '^[A-Z]{3}$'
        THEN split_part(c.cost ->> 'amount', '.', 1)::bigint * 1000000
           + rpad(split_part(c.cost ->> 'amount', '.', 2), 6, '0')::bigint
    END,
    currency = CASE
        WHEN jsonb_typeof(c.cost -> 'amount') = 'string'
         AND c.cost ->> 'amount' ~ '^[0-9]{1,12}(\.[0-9]{1,6})?$'
         AND jsonb_typeof(c.cost -> 'currency') = 'string'
         AND c.cost ->> 'currency' ~ '^[A-Z]{3}$'
        THEN c.cost ->> 'currency'
    END,
    team = CASE
        WHEN jsonb_typeof(c.cost -> 'team') = 'string' AND c.cost ->> 'team' <> ''
        THEN c.cost ->> 'team'
    END
FROM (
    SELECT id, ts_us, pg_temp.warden_cost(raw) AS cost
    FROM warden_audit
    WHERE strpos(raw, 'cost') > 0 OR strpos(raw, '\u') > 0
) c
WHERE a.id = c.id AND a.ts_us = c.ts_us AND jsonb_typeof(c.cost) = 'object';

-- Spend over a period reads the priced records of its time range; a
-- search by team reads its own index.
CREATE INDEX warden_audit_priced ON warden_audit (ts_us) INCLUDE (tenant_key)
    WHERE cost_micros IS NOT NULL;
CREATE INDEX warden_audit_team ON warden_audit (team, id) INCLUDE (ts_us, tenant_key)
    WHERE team IS NOT NULL;
