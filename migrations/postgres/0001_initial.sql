-- The initial schema: tenants, enrollment, agents, reports and API keys.
--
-- Kept in step with migrations/sqlite/0001_initial.sql: same tables, columns and constraints.
-- Ids are uuid (UUIDv7 from the server, so id order is creation order), instants are
-- timestamptz, secrets are only stored as SHA-256 hashes (bytea).

CREATE TABLE tenants (
    id              uuid        NOT NULL PRIMARY KEY,
    name            text        NOT NULL UNIQUE,
    entra_tenant_id uuid        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL
);

CREATE TABLE enrollment_tokens (
    id          uuid        NOT NULL PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    token_hash  bytea       NOT NULL UNIQUE,
    description text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    max_uses    bigint      NOT NULL CHECK (max_uses >= 0),
    -- the last line of defence against two enrollments taking the same last use
    uses        bigint      NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL
);

CREATE INDEX enrollment_tokens_tenant ON enrollment_tokens (tenant_id);

CREATE TABLE agents (
    id              uuid        NOT NULL PRIMARY KEY,
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    credential_hash bytea       NOT NULL,
    hostname        text        NOT NULL,
    os              text        NOT NULL,
    agent_version   text        NOT NULL,
    domain_controller       text        NOT NULL,
    enrolled_at     timestamptz NOT NULL,
    last_seen_at    timestamptz,
    revoked_at      timestamptz,
    -- the target of the (tenant_id, agent_id) foreign keys below, so a report or result can
    -- never be filed under a tenant its agent does not belong to; also the tenant index
    UNIQUE (tenant_id, id)
);

CREATE TABLE reports (
    id          uuid        NOT NULL PRIMARY KEY,
    agent_id    uuid        NOT NULL,
    tenant_id   uuid        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);

CREATE INDEX reports_agent ON reports (agent_id, started_at);

-- Every result of every report: the history behind latest_results, written by every ingest so
-- nothing is lost. Nothing reads it yet; history queries and retention (pruning) are future work.
CREATE TABLE report_results (
    report_id   uuid        NOT NULL REFERENCES reports (id),
    check_id    text        NOT NULL,
    status      text        NOT NULL
        CHECK (status IN ('pass', 'not_applicable', 'warn', 'error', 'fail')),
    summary     text        NOT NULL,
    evidence    jsonb       NOT NULL,
    remediation text        NOT NULL,
    duration_ms bigint      NOT NULL CHECK (duration_ms >= 0),
    observed_at timestamptz NOT NULL,
    PRIMARY KEY (report_id, check_id)
);

-- The fleet view: the newest result per (agent, check), kept current at ingest.
CREATE TABLE latest_results (
    agent_id    uuid        NOT NULL,
    check_id    text        NOT NULL,
    tenant_id   uuid        NOT NULL,
    report_id   uuid        NOT NULL REFERENCES reports (id),
    status      text        NOT NULL
        CHECK (status IN ('pass', 'not_applicable', 'warn', 'error', 'fail')),
    summary     text        NOT NULL,
    evidence    jsonb       NOT NULL,
    remediation text        NOT NULL,
    duration_ms bigint      NOT NULL CHECK (duration_ms >= 0),
    observed_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, check_id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);

CREATE INDEX latest_results_tenant ON latest_results (tenant_id);

CREATE TABLE api_keys (
    id           uuid        NOT NULL PRIMARY KEY,
    name         text        NOT NULL,
    role         text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
