-- 0001: consultations (the system of record of finished consultations) and the append-only,
-- hash-chained audit log. Applied by utimesh.db.migrations inside one transaction.

CREATE TABLE consultations (
    id                      uuid        PRIMARY KEY,
    name                    text        NOT NULL UNIQUE,    -- "consultations/{id}"
    request_id              text        NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL DEFAULT now(),
    profile                 text        NOT NULL DEFAULT '',
    decision                text        NOT NULL DEFAULT '', -- clinical.v1.Decision name
    outcome                 text        NOT NULL DEFAULT '', -- consult.v1.Outcome name
    needs_prescriber_review boolean     NOT NULL DEFAULT true,
    status                  text        NOT NULL DEFAULT 'draft',
    record                  bytea       NOT NULL,            -- serialized consult.v1.Consultation
    report_markdown         text        NOT NULL DEFAULT '',
    ruleset_hash            text        NOT NULL DEFAULT '',
    corpus_version          text        NOT NULL DEFAULT ''
);

-- One consultation per client request id (AIP-155 idempotency); empty means "no id given".
CREATE UNIQUE INDEX consultations_request_id_key
    ON consultations (request_id) WHERE request_id <> '';
CREATE INDEX consultations_created_at_idx ON consultations (created_at);

-- Audit events. `seq` is gapless: it is assigned as head.seq + 1 while the chain head row is
-- locked, so a missing number means a deleted event (a sequence would leave gaps on rollback).
-- `payload` holds ids only, never patient data.
CREATE TABLE audit_events (
    seq        bigint      PRIMARY KEY CHECK (seq > 0),
    id         uuid        NOT NULL UNIQUE,
    at         timestamptz NOT NULL,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    resource   text        NOT NULL,
    request_id text        NOT NULL DEFAULT '',
    payload    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash  text        NOT NULL,
    hash       text        NOT NULL UNIQUE
);
CREATE INDEX audit_events_resource_idx ON audit_events (resource, seq);

-- The chain head: the last seq and hash. Appenders lock this single row (FOR UPDATE), which
-- makes the chain strictly sequential, and the verifier compares it with the last event, which
-- detects events removed from the end.
CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint  NOT NULL CHECK (seq >= 0),
    hash      text    NOT NULL
);
INSERT INTO audit_chain_head (singleton, seq, hash)
VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only: ordinary sessions cannot change or remove audit events.
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
