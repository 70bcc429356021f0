-- Status news and the procedure's legal basis (docs/office.md). Keep in step with
-- migrations/postgres.

-- An outbox row may now carry news about the notice instead of the notice itself: `topic` is
-- '' for the notice, `application/{seq}/{status}` for the news that application {seq} became
-- {status}. The unique key takes the topic, so one recipient and channel can have the notice
-- and each piece of news once.
--
-- SQLite cannot drop a table constraint, so outbox is rebuilt with the same ids. Its child,
-- delivery_attempts, is rebuilt with it: dropping a parent that still has children would
-- leave foreign key violations that the commit refuses. sqlx runs this in a transaction, where
-- foreign keys cannot be switched off; deferring them only lets the steps in between pass.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE outbox_new (
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
    topic            TEXT NOT NULL DEFAULT '',  -- '' = the notice; application/{seq}/{status}
    UNIQUE (decision_key, recipient, channel, topic)
);
INSERT INTO outbox_new (id, decision_key, recipient, channel, state, attempts, next_attempt_at,
                        lease_until, leased_by, last_error)
SELECT id, decision_key, recipient, channel, state, attempts, next_attempt_at,
       lease_until, leased_by, last_error
FROM outbox;

CREATE TABLE delivery_attempts_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id     BIGINT NOT NULL REFERENCES outbox_new(id),
    attempted_at  TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    detail        TEXT
);
INSERT INTO delivery_attempts_new (id, outbox_id, attempted_at, outcome, detail)
SELECT id, outbox_id, attempted_at, outcome, detail FROM delivery_attempts;

DROP TABLE delivery_attempts;
DROP TABLE outbox;
-- Renaming the parent rewrites the child's REFERENCES outbox_new(id) to outbox(id).
ALTER TABLE outbox_new RENAME TO outbox;
ALTER TABLE delivery_attempts_new RENAME TO delivery_attempts;

-- The indexes of 0001 and 0002, dropped with the old tables.
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX outbox_recipient ON outbox(recipient, channel, state);
CREATE INDEX outbox_pending ON outbox(channel, id) WHERE state = 'pending';
CREATE INDEX delivery_attempts_outbox ON delivery_attempts(outbox_id, attempted_at);

-- The law the procedure rests on (the rule's legal_basis), as the notice gave it; none for
-- applications submitted before this migration.
ALTER TABLE applications ADD COLUMN legal_basis TEXT;
