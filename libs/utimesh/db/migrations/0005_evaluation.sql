-- 0005: evaluation. Runs of `utimesh eval` (summary for dashboards and baselines, full record
-- for drill-down) and adjudications of clinicians' reviews (consultation_reviews, 0003): the
-- verdict on a disagreement, the outcome the system should have had, and whether the case
-- was promoted into the regression dataset.

CREATE TABLE eval_runs (
    run_id         text        PRIMARY KEY,               -- sortable: UTC time + random hex
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    provider       text        NOT NULL,                  -- "offline" | "openai-compatible"
    datasets       text[]      NOT NULL,
    gate_passed    boolean,                               -- NULL: run without --gate
    summary        jsonb       NOT NULL,                  -- metrics per dataset, no per-case data
    record         jsonb       NOT NULL,                  -- the whole run record (synthetic cases)
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX eval_runs_started_at_idx ON eval_runs (started_at);

-- One adjudication per review. `expected_*` state what the system should have done; for
-- verdict 'system_correct' they repeat what it did (the reviewer was wrong).
CREATE TABLE eval_adjudications (
    review_name        text        PRIMARY KEY REFERENCES consultation_reviews (name),
    verdict            text        NOT NULL
        CHECK (verdict IN ('system_correct', 'system_wrong', 'inconclusive')),
    expected_decision  text        NOT NULL DEFAULT '',   -- cases.json vocabulary, '' if none
    expected_agent     text        NOT NULL DEFAULT '',   -- "NIT" | "SXT" | "TMP" | "FOS" | ''
    error_categories   text[]      NOT NULL DEFAULT '{}', -- the adjudicator's (taxonomy) labels
    note               text        NOT NULL DEFAULT '',   -- free text: never logged or audited
    adjudicator        text        NOT NULL,
    adjudicated_at     timestamptz NOT NULL DEFAULT now(),
    regression_case_id text        NOT NULL DEFAULT '',   -- set once promoted
    promoted_at        timestamptz
);
