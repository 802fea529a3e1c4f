-- Every write to a promotion row bumps its revision. Redis remembers the revision its copy
-- of the sale reflects and ignores older ones, so a caller holding a stale read (a warm-up
-- racing an edit, a reconcile racing add-stock) cannot undo a newer change or count one twice.
ALTER TABLE promotions ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
