-- The starting schema: catalog SKUs, flash-sale promotions, and orders with their items.
-- Money is integer cents everywhere. Order ids are 64-bit ids minted by the gateway
-- (no database round trip on the hot path), so `orders.id` has no default.

CREATE TABLE skus (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    stock       BIGINT NOT NULL CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE promotions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku_id         TEXT NOT NULL CHECK (sku_id <> ''),
    title          TEXT NOT NULL,
    price_cents    BIGINT NOT NULL CHECK (price_cents >= 0),
    stock          BIGINT NOT NULL CHECK (stock >= 0),
    per_user_limit INTEGER NOT NULL DEFAULT 1 CHECK (per_user_limit >= 1),
    starts_at      TIMESTAMPTZ NOT NULL,
    ends_at        TIMESTAMPTZ NOT NULL,
    paused         BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

CREATE TABLE orders (
    id             BIGINT PRIMARY KEY,
    user_id        BIGINT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('seckill', 'checkout')),
    promotion_id   BIGINT REFERENCES promotions (id),
    request_id     TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'shipped', 'completed',
                                                   'cancelled', 'refund_requested', 'refunded')),
    subtotal_cents BIGINT NOT NULL CHECK (subtotal_cents >= 0),
    discount_cents BIGINT NOT NULL DEFAULT 0 CHECK (discount_cents >= 0),
    shipping_cents BIGINT NOT NULL DEFAULT 0 CHECK (shipping_cents >= 0),
    total_cents    BIGINT NOT NULL CHECK (total_cents >= 0),
    -- When an unpaid order is cancelled and its stock returned.
    expires_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'seckill') = (promotion_id IS NOT NULL))
);

-- Idempotency keys: a request id is scoped to its promotion for seckill orders and to the
-- user's checkouts for normal orders.
CREATE UNIQUE INDEX orders_seckill_request ON orders (promotion_id, user_id, request_id) WHERE kind = 'seckill';
CREATE UNIQUE INDEX orders_checkout_request ON orders (user_id, request_id) WHERE kind = 'checkout';
-- "My orders", newest first.
CREATE INDEX orders_user_recent ON orders (user_id, created_at DESC, id DESC);
-- The payment-timeout canceller scans only unpaid orders.
CREATE INDEX orders_unpaid_expiry ON orders (expires_at) WHERE status = 'pending_payment';
CREATE INDEX orders_promotion ON orders (promotion_id, status) WHERE promotion_id IS NOT NULL;

CREATE TABLE order_items (
    order_id         BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          INTEGER NOT NULL CHECK (line_no >= 1),
    sku_id           TEXT NOT NULL,
    title            TEXT NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity >= 1),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);
