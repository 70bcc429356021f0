-- oshirase schema (SQLite). Dates are ISO "YYYY-MM-DD" text, timestamps RFC 3339 UTC text,
-- records and drafts JSON text. Keep in step with migrations/postgres.

CREATE TABLE ingest_batches (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,               -- snapshot | changes
    content_hash  TEXT NOT NULL UNIQUE,        -- the same file twice changes nothing
    as_of         TEXT,
    rows_in       BIGINT NOT NULL,
    rows_changed  BIGINT NOT NULL,
    events        BIGINT NOT NULL,
    applied_at    TEXT NOT NULL
);

CREATE TABLE residents (
    id            TEXT PRIMARY KEY,
    household_id  TEXT,
    status        TEXT NOT NULL,
    record        TEXT NOT NULL,
    record_hash   TEXT NOT NULL,
    batch_id      BIGINT NOT NULL REFERENCES ingest_batches(id)
);
CREATE INDEX residents_household ON residents(household_id);

CREATE TABLE resident_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id   TEXT NOT NULL,
    batch_id      BIGINT NOT NULL REFERENCES ingest_batches(id),
    record        TEXT NOT NULL
);
CREATE INDEX resident_history_resident ON resident_history(resident_id);

CREATE TABLE households (
    id              TEXT PRIMARY KEY,
    householder_id  TEXT,
    members         BIGINT NOT NULL,
    batch_id        BIGINT NOT NULL REFERENCES ingest_batches(id)
);

CREATE TABLE life_events (
    id        TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    date      TEXT NOT NULL,
    recorded  TEXT NOT NULL,
    batch_id  BIGINT NOT NULL REFERENCES ingest_batches(id)
);
CREATE INDEX life_events_recorded ON life_events(recorded);

CREATE TABLE feed_positions (
    source    TEXT PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);

CREATE TABLE rule_sets (
    version    TEXT PRIMARY KEY,
    rules      BIGINT NOT NULL,
    source     TEXT NOT NULL,
    loaded_at  TEXT NOT NULL
);

CREATE TABLE decisions (
    key           TEXT PRIMARY KEY,           -- rule / subject / occurrence: at most once, ever
    rule          TEXT NOT NULL,
    rule_version  BIGINT NOT NULL,
    rule_set      TEXT NOT NULL REFERENCES rule_sets(version),
    subject       TEXT NOT NULL,
    occurrence    TEXT NOT NULL,
    notify_on     TEXT NOT NULL,
    deadline      TEXT,
    staff_review  TEXT,
    critical      BIGINT NOT NULL,
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX decisions_subject ON decisions(subject);
CREATE INDEX decisions_notify ON decisions(notify_on);

CREATE TABLE drafts (
    decision_key  TEXT PRIMARY KEY REFERENCES decisions(key),
    fields        TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'open',  -- open | submitted | declined
    updated_at    TEXT NOT NULL
);

CREATE TABLE recommendations (
    decision_key  TEXT NOT NULL REFERENCES decisions(key),
    rule_id       TEXT NOT NULL,
    PRIMARY KEY (decision_key, rule_id)
);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_key     TEXT NOT NULL REFERENCES decisions(key),
    recipient        TEXT NOT NULL,
    channel          TEXT NOT NULL,          -- portal | email | webpush | staff
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    lease_until      TEXT,
    leased_by        TEXT,
    last_error       TEXT,
    UNIQUE (decision_key, recipient, channel)
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);

CREATE TABLE delivery_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id     BIGINT NOT NULL REFERENCES outbox(id),
    attempted_at  TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    detail        TEXT
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT
);

-- The scheduler's per-day watermark: a row per evaluated day, written in the same
-- transaction as that day's decisions.
CREATE TABLE scheduler_days (
    day           TEXT PRIMARY KEY,
    rule_set      TEXT NOT NULL,
    decisions     BIGINT NOT NULL,
    completed_at  TEXT NOT NULL
);
