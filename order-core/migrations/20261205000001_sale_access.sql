-- Anti-bot rules per sale: whether an order needs a sale token, and the challenge an app
-- passes before it gets one. Existing sales keep today's behaviour (no token); the admin
-- API turns tokens on for new sales unless told otherwise.
ALTER TABLE promotions
    ADD COLUMN requires_token BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN challenge TEXT NOT NULL DEFAULT 'none'
        CHECK (challenge IN ('none', 'proof_of_work', 'webhook')),
    ADD COLUMN pow_difficulty SMALLINT CHECK (pow_difficulty BETWEEN 1 AND 28),
    ADD COLUMN verifier_url TEXT CHECK (length(verifier_url) <= 500),
    ADD CONSTRAINT promotions_challenge_fields CHECK (
        (challenge = 'proof_of_work') = (pow_difficulty IS NOT NULL)
        AND (challenge = 'webhook') = (verifier_url IS NOT NULL)
    );
