-- Agent identity: credential rotation. While a rotation is under way the server accepts the
-- agent's current credential and the pending one; the pending hash replaces the current one
-- when the agent confirms it stored it (or first presents it), so a lost message never locks
-- the agent out. Revocation (agents.revoked_at, since 0001) ends both.
ALTER TABLE agents ADD COLUMN pending_credential_hash BLOB;
ALTER TABLE agents ADD COLUMN credential_rotated_at INTEGER;
