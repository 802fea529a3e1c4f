-- The order pipeline's own bookkeeping.

-- Stock a cancelled seckill order must give back to Redis. Written in the same transaction
-- as the cancellation and deleted once `release.lua` ran, so a crash in between never loses
-- a return (the script releases at most once, so a repeat is harmless).
CREATE TABLE stock_returns (
    order_id     BIGINT PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    promotion_id BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events to publish, written in the same transaction as the change they announce
-- (transactional outbox); deleted after the broker acknowledged them.
CREATE TABLE outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    payload    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
