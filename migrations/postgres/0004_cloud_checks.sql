-- Cloud checks through Microsoft Graph. Kept in step with migrations/sqlite/0004_cloud_checks.sql.
-- The Graph secret is sealed with the server key (AES-256-GCM, bound to the tenant id);
-- next_run_at is both the schedule and the lease that keeps replicas from running one tenant
-- at once (claimed with FOR UPDATE SKIP LOCKED).

CREATE TABLE graph_credentials (
    tenant_id           uuid        NOT NULL PRIMARY KEY REFERENCES tenants (id),
    directory_id        text        NOT NULL,
    client_id           text        NOT NULL,
    cloud               text        NOT NULL CHECK (cloud IN ('global', 'us_gov', 'china')),
    kind                text        NOT NULL CHECK (kind IN ('secret', 'certificate')),
    thumbprint          text,
    not_after           timestamptz,
    sealed              bytea       NOT NULL,
    updated_at          timestamptz NOT NULL,
    last_token_ok_at    timestamptz,
    last_token_error_at timestamptz,
    last_token_error    text,
    next_run_at         timestamptz NOT NULL
);

CREATE INDEX graph_credentials_due ON graph_credentials (next_run_at);

CREATE TABLE cloud_runs (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenants (id),
    results     jsonb       NOT NULL,
    sspr        jsonb       NOT NULL,
    worst       text        CHECK (worst IN ('pass', 'not_applicable', 'warn', 'error', 'fail')),
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
);
