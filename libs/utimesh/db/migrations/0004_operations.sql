-- 0004: long-running operations (AIP-151) behind StartConsultation, and the ledger that makes a
-- patient-memory update happen once per consultation however often a job is retried.
--
-- PostgreSQL is the source of truth of every operation; the Redis stream only delivers work.
-- A message lost by Redis is sent again by a worker's sweep (`due_at`), a message whose
-- worker died is reclaimed (XAUTOCLAIM), and the lease below keeps two workers off one job.

CREATE TABLE operations (
    id               uuid        PRIMARY KEY,
    name             text        NOT NULL UNIQUE,          -- "operations/{id}"
    request_id       text        UNIQUE,                   -- the caller's (AIP-155), NULL if none
    kind             text        NOT NULL DEFAULT 'consultation',
    -- The StartConsultationRequest, serialized and sealed with AES-GCM (it can carry the
    -- patient's identifier); `key_id` repeats the key id the blob embeds.
    payload          bytea       NOT NULL,
    key_id           text        NOT NULL,
    state            text        NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    done             boolean     NOT NULL DEFAULT false,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts > 0),
    stage            text        NOT NULL DEFAULT '',      -- progress: the last stage reported
    error_code       integer,                              -- google.rpc.Code of the last error
    error_reason     text        NOT NULL DEFAULT '',      -- e.g. DEAD_LETTERED, TRIAGE_UNAVAILABLE
    error_message    text        NOT NULL DEFAULT '',      -- no patient data: codes and causes
    dead_lettered    boolean     NOT NULL DEFAULT false,
    consultation     text        NOT NULL DEFAULT '',      -- "consultations/{id}" once succeeded
    cancel_requested boolean     NOT NULL DEFAULT false,
    lease_owner      text        NOT NULL DEFAULT '',
    lease_until      timestamptz,
    -- When a worker's sweep should (re)send the job to the stream if nobody holds it: the
    -- retry time after a failure, or a grace period after the last send.
    due_at           timestamptz,
    created_by       text        NOT NULL DEFAULT '',      -- JWT subject
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz,
    CHECK (done = (state IN ('succeeded', 'failed', 'cancelled')))
);
CREATE INDEX operations_due_idx ON operations (due_at) WHERE NOT done;
CREATE INDEX operations_created_idx ON operations (created_at DESC, id DESC);

-- One row per consultation whose outcome has been written into patient memory.
CREATE TABLE memory_updates (
    source_consultation text        PRIMARY KEY,
    patient_id          uuid        NOT NULL REFERENCES patients (id),
    recorded_at         timestamptz NOT NULL DEFAULT now()
);
