-- Residents sharing their own data with a private party (docs/sharing.md). Keep in step with
-- migrations/postgres.

-- A party the municipality registered: who it is, why it asks, where its browser redirects
-- go, its client keys, the items it may ask for, the longest grant it may hold.
CREATE TABLE parties (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    redirect_uris   TEXT NOT NULL,            -- JSON array, compared exactly
    client_jwks     TEXT NOT NULL,
    items           TEXT NOT NULL,            -- JSON array of item codes
    max_grant_days  BIGINT NOT NULL,
    revocation_uri  TEXT,                     -- where revocations are posted as signed SETs
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- What a resident consented to: one party, some items, until a time, revocable. `status_idx`
-- is its place in the published status list.
CREATE TABLE share_grants (
    id            TEXT PRIMARY KEY,
    resident_id   TEXT NOT NULL,
    granted_by    TEXT NOT NULL,
    party_id      TEXT NOT NULL REFERENCES parties(id),
    items         TEXT NOT NULL,              -- JSON array of item codes
    purpose       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT,
    last_used_at  TEXT,
    status_idx    BIGINT NOT NULL UNIQUE
);
CREATE INDEX share_grants_resident ON share_grants(resident_id);
CREATE INDEX share_grants_party ON share_grants(party_id);

-- Authorization codes (only their SHA-256 is kept): one use, short-lived, bound to the
-- redirect URI and the PKCE challenge.
CREATE TABLE share_codes (
    code_hash       TEXT PRIMARY KEY,
    grant_id        TEXT NOT NULL REFERENCES share_grants(id),
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT
);

-- DPoP proofs seen (key thumbprint and jti), so none is accepted twice.
CREATE TABLE dpop_proofs (
    jkt      TEXT NOT NULL,
    jti      TEXT NOT NULL,
    seen_at  TEXT NOT NULL,
    PRIMARY KEY (jkt, jti)
);

-- Revocations to push to their party as Security Event Tokens (RFC 8417), until delivered.
CREATE TABLE share_revocations (
    grant_id      TEXT PRIMARY KEY REFERENCES share_grants(id),
    party_id      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_attempt  TEXT NOT NULL,
    delivered_at  TEXT,
    last_error    TEXT
);
CREATE INDEX share_revocations_due ON share_revocations(delivered_at, next_attempt);

-- A resident's request that the register be corrected (自己情報の訂正の申出): recorded for
-- the counter's staff, never a change by itself.
CREATE TABLE correction_requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    resident_id   TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    item          TEXT NOT NULL,              -- a data-item code
    message       TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX correction_requests_resident ON correction_requests(resident_id);

INSERT INTO office_counters (name, value) VALUES ('share_status', 0);
