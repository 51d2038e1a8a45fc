-- Session tokens issued before this instant are refused: set when a user's password is set or
-- cleared, so a password reset after a compromise also ends the sessions signed in with the
-- old one. NULL: no such cut-off.
ALTER TABLE users ADD COLUMN sessions_valid_after INTEGER;
