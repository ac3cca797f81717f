-- 0002: patients and their memory (episodes and recorded facts, each with its source encounter).
-- Identifiers are never stored in clear: `id_lookup` is an HMAC-SHA256 blind index for lookups,
-- `id_ciphertext` the AES-GCM sealed identifier (utimesh.db.crypto; it embeds its key id,
-- repeated in `key_id` so rows still sealed with an old key can be found for re-sealing).

CREATE TABLE patients (
    id            uuid        PRIMARY KEY,
    id_lookup     bytea       NOT NULL UNIQUE,
    id_ciphertext bytea       NOT NULL,
    key_id        text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patients_key_id_idx ON patients (key_id);

-- One UTI episode per initial visit. `regimen` is a serialized utimesh.clinical.v1.Regimen
-- (NULL when none was given); `decision` the rules' decision ("recommend_treatment", ...);
-- `outcome` ongoing | improving | failed | adverse_effect; `recorded_on` the visit date.
CREATE TABLE memory_episodes (
    id                  bigserial   PRIMARY KEY,
    patient_id          uuid        NOT NULL REFERENCES patients (id),
    onset_date          date        NOT NULL,
    treatment_end_date  date,
    regimen             bytea,
    decision            text,
    outcome             text        NOT NULL DEFAULT 'ongoing'
        CHECK (outcome IN ('ongoing', 'improving', 'failed', 'adverse_effect')),
    recorded_on         date        NOT NULL,
    source_consultation text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (treatment_end_date IS NULL OR treatment_end_date >= onset_date)
);
CREATE INDEX memory_episodes_patient_idx ON memory_episodes (patient_id, onset_date);

-- Facts as reported at a visit. `value` is clinical free text (PHI, not an identifier):
-- an allergy or medication as written, an eGFR in mL/min, a pregnancy_status
-- ("pregnant:<weeks>" when weeks are known), or "true"/"false" for lactation.
CREATE TABLE memory_facts (
    id                  bigserial   PRIMARY KEY,
    patient_id          uuid        NOT NULL REFERENCES patients (id),
    kind                text        NOT NULL
        CHECK (kind IN ('allergy', 'medication', 'kidney', 'pregnancy', 'lactation')),
    value               text        NOT NULL,
    recorded_on         date        NOT NULL,
    source_consultation text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memory_facts_patient_idx ON memory_facts (patient_id, kind, recorded_on);
