-- Refresh tokens of residents' grants (docs/sharing.md): only their SHA-256 is kept; each
-- is bound to the party's DPoP key, used once (a new one comes with each refresh) and
-- lives no longer than its grant. Keep in step with migrations/sqlite.
CREATE TABLE share_refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    grant_id     TEXT NOT NULL REFERENCES share_grants(id),
    jkt          TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    used_at      TEXT
);
CREATE INDEX share_refresh_tokens_grant ON share_refresh_tokens(grant_id);
