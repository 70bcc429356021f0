-- The register batch each day's run read. Events stored by a later batch were seen by no
-- run: the next one makes the notices whose day has passed (none is lost to an ingest that
-- came after its day's run).
ALTER TABLE scheduler_days ADD COLUMN register_batch BIGINT;
