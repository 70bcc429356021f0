-- The staff console (docs/office.md): staff sessions beside residents', what staff recorded
-- as done, and the last run's rule failures. Keep in step with migrations/postgres.

-- A staff member's session: `staff` holds who they are (JSON: id, roles, department) and
-- `resident_id` their staff id; a resident's session has no `staff`. Each side refuses the
-- other's rows.
ALTER TABLE portal_sessions ADD COLUMN staff TEXT;

-- What a staff member did about an item of the work queue: once per item; the item leaves
-- the queue.
CREATE TABLE staff_actions (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind   TEXT NOT NULL,                 -- staff_notice | dead_letter | rule_failure
    item   TEXT NOT NULL,                 -- the outbox row's id, or rule/resident/day
    actor  TEXT NOT NULL,                 -- staff:ID
    note   TEXT,
    at     TEXT NOT NULL,
    UNIQUE (kind, item)
);

-- The rule failures of the last day evaluated (each run replaces them).
CREATE TABLE rule_failures (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    day           TEXT NOT NULL,
    rule          TEXT NOT NULL,
    rule_version  BIGINT NOT NULL,
    resident      TEXT NOT NULL,
    file          TEXT NOT NULL,
    line          BIGINT NOT NULL,
    field         TEXT NOT NULL,
    message       TEXT NOT NULL,
    recorded_at   TEXT NOT NULL
);
