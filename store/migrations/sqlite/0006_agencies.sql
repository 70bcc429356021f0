-- Agencies told of updates (①). Every table is keyed by the agency first: a deployment that
-- outgrows one primary distributes by it. Times are UTC text, compared as text.

-- The register items each ingest changed, per person (codes of the data-item dictionary,
-- comma-separated). The first batch of an empty register is the baseline and writes none.
CREATE TABLE register_item_changes (
    batch_id      BIGINT NOT NULL REFERENCES ingest_batches(id),
    resident_id   TEXT NOT NULL,
    items         TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    PRIMARY KEY (batch_id, resident_id)
);

-- An agency: who it is, where its events go, the public keys its client assertions are
-- checked with, the dictionary version it reads and the key of its pseudonyms.
CREATE TABLE agencies (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    endpoint            TEXT,                    -- NULL: it pulls only
    client_jwks         TEXT NOT NULL,           -- JSON Web Key Set
    dictionary_version  BIGINT NOT NULL,
    pseudonym_key       TEXT NOT NULL,           -- hex; never leaves the store
    enabled             BIGINT NOT NULL,
    verified_at         TEXT,                    -- the endpoint answered the handshake
    created_at          TEXT NOT NULL
);

-- One event stream per (agency, purpose): its contiguous sequence and its delivery cursor.
-- Every event up to delivered_seq is settled (delivered or dead); the next one is retried at
-- next_attempt_at. A worker holds a stream while lease_until is in the future.
CREATE TABLE agency_subscriptions (
    agency_id         TEXT NOT NULL REFERENCES agencies(id),
    purpose_id        TEXT NOT NULL,
    enabled           BIGINT NOT NULL,
    last_seq          BIGINT NOT NULL,
    delivered_seq     BIGINT NOT NULL,
    attempts          BIGINT NOT NULL,
    next_attempt_at   TEXT NOT NULL,
    last_error        TEXT,
    last_delivered_at TEXT,
    last_sent_at      TEXT,                      -- an event or a heartbeat
    dead              BIGINT NOT NULL,
    lease_holder      TEXT,
    lease_until       TEXT,
    PRIMARY KEY (agency_id, purpose_id)
);

-- The agency's name for a person (like a 機関別符号): never the register id or My Number.
CREATE TABLE agency_pseudonyms (
    agency_id     TEXT NOT NULL REFERENCES agencies(id),
    pseudonym     TEXT NOT NULL,
    resident_id   TEXT NOT NULL,
    issued_at     TEXT NOT NULL,
    PRIMARY KEY (agency_id, pseudonym),
    UNIQUE (agency_id, resident_id)
);

-- Who an agency follows, under which purpose, until when. resident_id '*' is the whole
-- municipality (only where the purpose allows it). items NULL: all the purpose allows.
CREATE TABLE agency_interests (
    agency_id     TEXT NOT NULL REFERENCES agencies(id),
    purpose_id    TEXT NOT NULL,
    resident_id   TEXT NOT NULL,
    items         TEXT,
    valid_to      TEXT NOT NULL,                 -- a date: the interest holds through it
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (agency_id, purpose_id, resident_id)
);
CREATE INDEX agency_interests_resident ON agency_interests(resident_id);

-- The change events: no personal data leaves with them (the subject is the pseudonym); the
-- resident id stays here for the resident's own record of what was provided. batch_id has no
-- foreign key: the row is written by that batch's own transaction, and checking it for each
-- of a fan-out's hundreds of thousands of rows was a third of the database's work.
CREATE TABLE agency_events (
    agency_id           TEXT NOT NULL,
    purpose_id          TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    type                TEXT NOT NULL,
    subject             TEXT NOT NULL,
    resident_id         TEXT NOT NULL,
    local_gov_code      TEXT NOT NULL,
    items               TEXT NOT NULL,
    dictionary_version  BIGINT NOT NULL,
    batch_id            BIGINT NOT NULL,
    time                TEXT NOT NULL,
    state               TEXT NOT NULL,           -- pending | delivered | dead
    delivered_at        TEXT,
    last_error          TEXT,
    PRIMARY KEY (agency_id, purpose_id, seq)
);
CREATE INDEX agency_events_resident ON agency_events(resident_id);
CREATE INDEX agency_events_time ON agency_events(time);

-- What was provided about a person and to whom: data pulls as they happen, events when
-- they leave agency_events (after the retention days). The resident reads it in the portal.
CREATE TABLE access_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id   TEXT NOT NULL,
    at            TEXT NOT NULL,
    accessor_kind TEXT NOT NULL,                 -- agency | party
    accessor_id   TEXT NOT NULL,
    accessor_name TEXT NOT NULL,
    basis         TEXT NOT NULL,                 -- the purpose (or grant) it was provided under
    action        TEXT NOT NULL,                 -- event | pull
    items         TEXT NOT NULL,
    outcome       TEXT NOT NULL                  -- provided | withheld (what was held back, and why, in items)
);
CREATE INDEX access_log_resident ON access_log(resident_id, at);

-- Client assertions already used (RFC 7523 jti), kept until they expire: a replay is refused.
CREATE TABLE agency_assertions (
    agency_id     TEXT NOT NULL,
    jti           TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    PRIMARY KEY (agency_id, jti)
);
