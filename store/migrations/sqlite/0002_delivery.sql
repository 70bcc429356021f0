-- Delivery and the portal: push subscriptions, residents' own preferences, read marks, and
-- what a resident did with a draft. Keep in step with migrations/postgres.

-- Web push subscriptions registered through the portal (PushSubscription JSON, flattened).
CREATE TABLE push_subscriptions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id  TEXT NOT NULL,
    endpoint     TEXT NOT NULL UNIQUE,
    p256dh       TEXT NOT NULL,                -- base64url, the browser's P-256 public key
    auth         TEXT NOT NULL,                -- base64url, 16-byte auth secret
    created_at   TEXT NOT NULL
);
CREATE INDEX push_subscriptions_resident ON push_subscriptions(resident_id);

-- Preferences a resident set in the portal. They override the register's preferences and
-- consents from the moment they are saved; the outbox workers read them at send time.
CREATE TABLE resident_preferences (
    resident_id      TEXT PRIMARY KEY,
    channels         TEXT NOT NULL,            -- JSON array of accepted channel names
    email_consent    BIGINT NOT NULL,
    webpush_consent  BIGINT NOT NULL,
    updated_at       TEXT NOT NULL
);

-- Notices a reader has opened in the portal (the reader may be a guardian or proxy).
CREATE TABLE notice_reads (
    decision_key  TEXT NOT NULL REFERENCES decisions(key),
    reader        TEXT NOT NULL,
    read_at       TEXT NOT NULL,
    PRIMARY KEY (decision_key, reader)
);

-- What was submitted (the prefilled fields with the resident's corrections) and by whom.
ALTER TABLE drafts ADD COLUMN submitted_fields TEXT;
ALTER TABLE drafts ADD COLUMN decided_by TEXT;

CREATE INDEX outbox_recipient ON outbox(recipient, channel, state);
CREATE INDEX audit_log_target ON audit_log(target);

-- Workers claim pending rows of a channel in id order: only those are in this index, so a
-- claim reads a batch, not every row ever delivered.
CREATE INDEX outbox_pending ON outbox(channel, id) WHERE state = 'pending';

-- The daily cap counts a person's deliveries of the day through their outbox rows.
CREATE INDEX delivery_attempts_outbox ON delivery_attempts(outbox_id, attempted_at);
