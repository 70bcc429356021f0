-- DPoP proofs are remembered only while they could be accepted (their iat window): pruned
-- by their time (docs/sharing.md). Keep in step with migrations/sqlite.
CREATE INDEX dpop_proofs_seen ON dpop_proofs(seen_at);
