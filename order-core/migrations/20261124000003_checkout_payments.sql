-- Normal checkout, coupons, payments, refunds and the post-payment jobs.

CREATE TABLE coupon_templates (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code               TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL CHECK (kind IN ('fixed', 'percent')),
    amount_off_cents   BIGINT CHECK (amount_off_cents > 0),
    percent_off        INTEGER CHECK (percent_off BETWEEN 1 AND 100),
    max_discount_cents BIGINT CHECK (max_discount_cents > 0),
    min_spend_cents    BIGINT NOT NULL DEFAULT 0 CHECK (min_spend_cents >= 0),
    valid_from         TIMESTAMPTZ NOT NULL,
    valid_until        TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (valid_until > valid_from),
    CHECK ((kind = 'fixed') = (amount_off_cents IS NOT NULL)),
    CHECK ((kind = 'percent') = (percent_off IS NOT NULL))
);

-- A coupon a user holds. `reason` makes grants idempotent: one reward per paid order.
CREATE TABLE coupon_grants (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    template_id   BIGINT NOT NULL REFERENCES coupon_templates (id),
    user_id       BIGINT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'used', 'revoked')),
    used_order_id BIGINT,
    reason        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (reason)
);
CREATE INDEX coupon_grants_user ON coupon_grants (user_id, status);

ALTER TABLE orders
    ADD COLUMN coupon_grant_id  BIGINT REFERENCES coupon_grants (id),
    ADD COLUMN shipping_method  TEXT,
    ADD COLUMN shipping_address JSONB,
    ADD COLUMN payment_id       TEXT,
    ADD COLUMN paid_at          TIMESTAMPTZ;

-- Every provider callback that passed the signature check, keyed by the provider's id:
-- a replay finds its row and changes nothing.
CREATE TABLE payments (
    id           TEXT PRIMARY KEY,
    order_id     BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('applied', 'refund_due', 'amount_mismatch', 'unknown_order')),
    payload      JSONB NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE refunds (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     BIGINT NOT NULL,
    payment_id   TEXT,
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    reason       TEXT NOT NULL CHECK (reason IN ('late_payment', 'duplicate_payment', 'amount_mismatch', 'unknown_order', 'user_request')),
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (order_id, reason, payment_id)
);

-- Events a consumer has handled (consumer name, event id): redelivery changes nothing.
CREATE TABLE processed_events (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE loyalty_ledger (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    order_id   BIGINT NOT NULL,
    points     BIGINT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason IN ('order_paid', 'order_refunded')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (order_id, reason)
);

-- Push/SMS messages for the delivery service (the default notifier writes here).
CREATE TABLE notifications (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    order_id   BIGINT NOT NULL,
    template   TEXT NOT NULL,
    payload    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (order_id, template)
);

CREATE TABLE shipments (
    order_id       BIGINT PRIMARY KEY REFERENCES orders (id),
    status         TEXT NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'handed_over')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    handed_over_at TIMESTAMPTZ
);
