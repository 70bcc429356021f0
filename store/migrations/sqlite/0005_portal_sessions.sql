-- The portal's own sessions, opened by a login with the identity provider's token. The
-- cookie holds a random id; only its SHA-256 is kept, so reading this table gives no
-- session away. A logout deletes the row; times are UTC text, compared as text.
CREATE TABLE portal_sessions (
    id_hash       TEXT PRIMARY KEY,
    resident_id   TEXT NOT NULL,
    csrf          TEXT NOT NULL,               -- the forms' token, kept across rotations
    issued_at     TEXT NOT NULL,               -- when this id was issued (rotation)
    last_seen_at  TEXT NOT NULL,               -- idle timeout
    expires_at    TEXT NOT NULL                -- lifetime, or the end of a rotated id's grace
);
CREATE INDEX portal_sessions_expiry ON portal_sessions(expires_at);
CREATE INDEX portal_sessions_csrf ON portal_sessions(csrf);
