-- A hot sale's stock may be spread over several Redis shards (cluster nodes), fixed at
-- creation. Existing sales keep one shard: their keys are the ones they always had.
ALTER TABLE promotions
    ADD COLUMN shards SMALLINT NOT NULL DEFAULT 1 CHECK (shards BETWEEN 1 AND 16);
