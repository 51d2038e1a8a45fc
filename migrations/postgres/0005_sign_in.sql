-- Signing in: a user's password (an argon2id PHC string, NULL when the user has none and can
-- only sign in through an OIDC provider) and the session tokens signed out before they expired.
-- Kept in step with migrations/sqlite/0005_sign_in.sql.

ALTER TABLE users ADD COLUMN password_hash text;

CREATE TABLE revoked_session_tokens (
    jti        uuid        NOT NULL PRIMARY KEY,
    user_id    uuid        NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX revoked_session_tokens_expiry ON revoked_session_tokens (expires_at);
