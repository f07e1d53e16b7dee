-- Warden control agent, schema step 4: approvals shared by the agents on
-- one database, a row each (issue 84).
--
-- `gen`: the approvals' generation (warden_generation, domain
-- 'approvals') whose turn last wrote the row. Turns on the approvals are
-- serialised by their advisory lock, so an agent whose memory is of
-- generation G brings it up to date with the rows of `gen` > G and the
-- ids (what another agent dropped), not the whole table.
--
-- `approval` is the approval's JSON as text, not jsonb: jsonb refuses a
-- string holding U+0000, which a held call's reason, justification or
-- names may carry; such a call could never be recorded, and its gateway
-- would claim it again and again.
ALTER TABLE warden_approvals
    ALTER COLUMN approval TYPE text USING approval::text,
    ADD COLUMN gen bigint NOT NULL DEFAULT 0;
CREATE INDEX warden_approvals_gen ON warden_approvals (gen);
