-- Cloud checks through Microsoft Graph: each tenant's app credential (the secret sealed with
-- the server key, bound to the tenant id), when its next run is due (also the lease that keeps
-- two replicas from running one tenant at once), and the last run's results and
-- self-service password activity. Same representation as 0001.

CREATE TABLE graph_credentials (
    tenant_id           TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    directory_id        TEXT    NOT NULL,
    client_id           TEXT    NOT NULL,
    cloud               TEXT    NOT NULL CHECK (cloud IN ('global', 'us_gov', 'china')),
    kind                TEXT    NOT NULL CHECK (kind IN ('secret', 'certificate')),
    thumbprint          TEXT,
    not_after           INTEGER,
    sealed              BLOB    NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_token_ok_at    INTEGER,
    last_token_error_at INTEGER,
    last_token_error    TEXT,
    next_run_at         INTEGER NOT NULL
) STRICT;

CREATE INDEX graph_credentials_due ON graph_credentials (next_run_at);

-- The last cloud run per tenant: results as a JSON array of check results, the audit-log
-- activity as a JSON object, and the worst status rank for fleet counts.
CREATE TABLE cloud_runs (
    tenant_id   TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    results     TEXT    NOT NULL,
    sspr        TEXT    NOT NULL,
    worst       TEXT    CHECK (worst IN ('pass', 'not_applicable', 'warn', 'error', 'fail')),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL
) STRICT;
