-- Submitted applications for the back office (docs/office.md). Keep in step with
-- migrations/sqlite.

-- Contiguous counters: incremented in the transaction that uses the number, so a rolled
-- back transaction leaves no gap (a database sequence would).
CREATE TABLE office_counters (
    name   TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);
INSERT INTO office_counters (name, value) VALUES ('applications', 0);

-- One row per submission of a draft, written in the submission's transaction. A returned
-- application resubmitted is a new row (a new seq) with the same decision key and the next
-- version.
CREATE TABLE applications (
    seq           BIGINT PRIMARY KEY,
    decision_key  TEXT NOT NULL REFERENCES decisions(key),
    version       BIGINT NOT NULL,
    rule          TEXT NOT NULL,
    rule_version  BIGINT NOT NULL,
    title         TEXT NOT NULL,             -- the procedure's title (ja) on the notice
    subject       TEXT NOT NULL,
    applicant     TEXT NOT NULL,             -- the reader who submitted
    role          TEXT NOT NULL,             -- subject | guardian | proxy | ...
    proxy_scopes  TEXT,                      -- JSON array, for a proxy
    prefilled     TEXT NOT NULL,             -- JSON object
    corrections   TEXT NOT NULL,             -- JSON object: field -> {before, after}
    submitted_at  TEXT NOT NULL,
    status        TEXT NOT NULL,             -- submitted | received | in_review | completed | returned | rejected
    message       TEXT,                      -- the office's message of the last change
    status_at     TEXT NOT NULL,
    UNIQUE (decision_key, version)
);
CREATE INDEX applications_rule ON applications(rule, seq);
CREATE INDEX applications_submitted ON applications(submitted_at);

-- Every status an application had, in order.
CREATE TABLE application_statuses (
    id       BIGSERIAL PRIMARY KEY,
    seq      BIGINT NOT NULL REFERENCES applications(seq),
    status   TEXT NOT NULL,
    message  TEXT,
    actor    TEXT NOT NULL,
    at       TEXT NOT NULL
);
CREATE INDEX application_statuses_seq ON application_statuses(seq, id);

-- An agency-like client that is a core system (基幹業務システム): the procedures (rule ids,
-- JSON array) whose applications it may read and change.
CREATE TABLE office_clients (
    agency_id   TEXT PRIMARY KEY REFERENCES agencies(id),
    rules       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
