-- Signing in: a user's password (an argon2id PHC string, NULL when the user has none and can
-- only sign in through an OIDC provider) and the session tokens signed out before they expired.
-- Session tokens themselves are not stored: they are JWTs the server signs and verifies; a row
-- here refuses one until its expiry, after which the row may be dropped.

ALTER TABLE users ADD COLUMN password_hash TEXT;
-- A disabled user can neither sign in nor use its session tokens or API keys.
ALTER TABLE users ADD COLUMN disabled_at INTEGER;

CREATE TABLE revoked_session_tokens (
    jti        TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX revoked_session_tokens_expiry ON revoked_session_tokens (expires_at);

-- An API key created by a signed-in user belongs to that user: it stops working when the user
-- is deleted and never does more, or sees more tenants, than the user may now. (No foreign key
-- to users: the row outlives the user, and the key is refused because its owner is gone.)
CREATE TABLE api_key_owners (
    api_key_id TEXT NOT NULL PRIMARY KEY REFERENCES api_keys (id),
    user_id    TEXT NOT NULL
) STRICT;
