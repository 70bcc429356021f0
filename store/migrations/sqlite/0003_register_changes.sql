-- The scheduler keeps the register in memory and, after an ingest, reads only what the new
-- batches wrote: the records by batch, and every stored event of the people they concern.
CREATE INDEX residents_batch ON residents(batch_id);
CREATE INDEX life_events_batch ON life_events(batch_id);
CREATE INDEX life_events_subject ON life_events(subject);
