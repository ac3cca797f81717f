-- 0003: record keeping of consultations: the prescriber's sign-off, follow-up visits and
-- clinicians' reviews. The sign-off itself lives in the consultation's record (bytea); the
-- columns below are for queries.

ALTER TABLE consultations
    ADD COLUMN signed_by text        NOT NULL DEFAULT '',
    ADD COLUMN signed_at timestamptz;
CREATE INDEX consultations_status_idx ON consultations (status);

-- Follow-up visits against a consultation's regimen (FU rules of triage).
CREATE TABLE consultation_follow_ups (
    id              uuid        PRIMARY KEY,
    name            text        NOT NULL UNIQUE,   -- "consultations/{id}/followUps/{id}"
    consultation_id uuid        NOT NULL REFERENCES consultations (id),
    visit_date      date        NOT NULL,
    answers         bytea       NOT NULL,          -- serialized clinical.v1.FollowUpAnswers
    decision        text        NOT NULL,          -- clinical.v1.Decision name
    rule_ids        text[]      NOT NULL DEFAULT '{}',
    outcome         text        NOT NULL,          -- consult.v1.EpisodeOutcome name
    recorded_by     text        NOT NULL,          -- JWT subject
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consultation_follow_ups_consultation_idx
    ON consultation_follow_ups (consultation_id, created_at);

-- Clinicians' reviews of consultations, kept for evaluation. `comment` is free text: stored
-- here only, never copied into audit events or logs.
CREATE TABLE consultation_reviews (
    id                   uuid        PRIMARY KEY,
    name                 text        NOT NULL UNIQUE,   -- "consultations/{id}/reviews/{id}"
    consultation_id      uuid        NOT NULL REFERENCES consultations (id),
    reviewer             text        NOT NULL,          -- JWT subject
    reviewer_role        text        NOT NULL,
    agrees_with_decision boolean     NOT NULL,
    agrees_with_plan     boolean     NOT NULL,
    error_categories     text[]      NOT NULL DEFAULT '{}',
    comment              text        NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consultation_reviews_consultation_idx
    ON consultation_reviews (consultation_id, created_at);
