-- Status news and the procedure's legal basis (docs/office.md). Keep in step with
-- migrations/sqlite.

-- An outbox row may now carry news about the notice instead of the notice itself: `topic` is
-- '' for the notice, `application/{seq}/{status}` for the news that application {seq} became
-- {status}. The unique key takes the topic, so one recipient and channel can have the notice
-- and each piece of news once.
ALTER TABLE outbox ADD COLUMN topic TEXT NOT NULL DEFAULT '';

-- The old key (decision_key, recipient, channel) was declared inline, so its name is the one
-- PostgreSQL chose: look it up rather than guess it.
DO $$
DECLARE
    old_key TEXT;
BEGIN
    SELECT c.conname INTO old_key
    FROM pg_constraint c
    WHERE c.conrelid = 'outbox'::regclass AND c.contype = 'u'
      AND (SELECT array_agg(a.attname::TEXT ORDER BY a.attname)
           FROM unnest(c.conkey) AS k(n)
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n)
          = ARRAY['channel', 'decision_key', 'recipient'];
    IF old_key IS NOT NULL THEN
        EXECUTE format('ALTER TABLE outbox DROP CONSTRAINT %I', old_key);
    END IF;
END
$$;

ALTER TABLE outbox ADD CONSTRAINT outbox_notice_topic UNIQUE (decision_key, recipient, channel, topic);

-- The law the procedure rests on (the rule's legal_basis), as the notice gave it; none for
-- applications submitted before this migration.
ALTER TABLE applications ADD COLUMN legal_basis TEXT;
