-- When a sale's Redis keys were removed: it had ended, every order was persisted, the
-- stores agreed and no stock return was waiting. From then on PostgreSQL alone answers for
-- it; nothing loads it into Redis again (edits, pause, warm-up and repair are refused).
ALTER TABLE promotions ADD COLUMN keys_retired_at TIMESTAMPTZ;
CREATE INDEX promotions_to_retire ON promotions (ends_at) WHERE keys_retired_at IS NULL;
