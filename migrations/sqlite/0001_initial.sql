-- The initial schema: tenants, enrollment, agents, reports and API keys.
--
-- Representation (kept in step with migrations/postgres/0001_initial.sql and
-- server/src/storage/sqlite.rs):
-- * ids are UUIDs as lowercase hyphenated TEXT (36 characters). Byte-wise text order equals
--   UUID order, so the time-ordered UUIDv7 ids page in creation order, as on PostgreSQL.
-- * instants are INTEGER microseconds since the Unix epoch, UTC: exact, sortable and the same
--   precision as PostgreSQL's timestamptz.
-- * secrets are only stored as SHA-256 hashes (BLOB).
-- Tables are STRICT so a value of the wrong type is refused instead of stored.

CREATE TABLE tenants (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    entra_tenant_id TEXT    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE enrollment_tokens (
    id          TEXT    NOT NULL PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants (id),
    token_hash  BLOB    NOT NULL UNIQUE,
    description TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    max_uses    INTEGER NOT NULL CHECK (max_uses >= 0),
    -- the last line of defence against two enrollments taking the same last use
    uses        INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    revoked_at  INTEGER,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX enrollment_tokens_tenant ON enrollment_tokens (tenant_id);

CREATE TABLE agents (
    id              TEXT    NOT NULL PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants (id),
    credential_hash BLOB    NOT NULL,
    hostname        TEXT    NOT NULL,
    os              TEXT    NOT NULL,
    agent_version   TEXT    NOT NULL,
    domain_controller       TEXT    NOT NULL,
    enrolled_at     INTEGER NOT NULL,
    last_seen_at    INTEGER,
    revoked_at      INTEGER,
    -- the target of the (tenant_id, agent_id) foreign keys below, so a report or result can
    -- never be filed under a tenant its agent does not belong to; also the tenant index
    UNIQUE (tenant_id, id)
) STRICT;

CREATE TABLE reports (
    id          TEXT    NOT NULL PRIMARY KEY,
    agent_id    TEXT    NOT NULL,
    tenant_id   TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
) STRICT;

CREATE INDEX reports_agent ON reports (agent_id, started_at);

-- Every result of every report: the history behind latest_results, written by every ingest so
-- nothing is lost. Nothing reads it yet; history queries and retention (pruning) are future work.
CREATE TABLE report_results (
    report_id   TEXT    NOT NULL REFERENCES reports (id),
    check_id    TEXT    NOT NULL,
    status      TEXT    NOT NULL
        CHECK (status IN ('pass', 'not_applicable', 'warn', 'error', 'fail')),
    summary     TEXT    NOT NULL,
    evidence    TEXT    NOT NULL CHECK (json_valid(evidence)),
    remediation TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    observed_at INTEGER NOT NULL,
    PRIMARY KEY (report_id, check_id)
) STRICT;

-- The fleet view: the newest result per (agent, check), kept current at ingest.
CREATE TABLE latest_results (
    agent_id    TEXT    NOT NULL,
    check_id    TEXT    NOT NULL,
    tenant_id   TEXT    NOT NULL,
    report_id   TEXT    NOT NULL REFERENCES reports (id),
    status      TEXT    NOT NULL
        CHECK (status IN ('pass', 'not_applicable', 'warn', 'error', 'fail')),
    summary     TEXT    NOT NULL,
    evidence    TEXT    NOT NULL CHECK (json_valid(evidence)),
    remediation TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    observed_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, check_id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
) STRICT;

CREATE INDEX latest_results_tenant ON latest_results (tenant_id);

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    key_hash     BLOB    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
) STRICT;
