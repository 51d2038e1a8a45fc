-- Multi-tenant access control: tenant assignments and operation limits of API keys, users
-- (principals that will sign in through JWT/OIDC later) and their tenant assignments, and the
-- audit log. Same representation as 0001 (UUID text, microsecond INTEGER instants, STRICT).
--
-- Roles: 'administrator' sees every tenant; 'technician', 'viewer' and 'integration' see only
-- the tenants assigned to them in *_tenants. An integration key is also limited to the
-- operations listed in api_key_operations.

CREATE TABLE api_key_tenants (
    api_key_id TEXT NOT NULL REFERENCES api_keys (id),
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (api_key_id, tenant_id)
) STRICT;

CREATE TABLE api_key_operations (
    api_key_id TEXT NOT NULL REFERENCES api_keys (id),
    operation  TEXT NOT NULL,
    PRIMARY KEY (api_key_id, operation)
) STRICT;

CREATE TABLE users (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL
        CHECK (role IN ('administrator', 'technician', 'viewer', 'integration')),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE user_tenants (
    user_id   TEXT NOT NULL REFERENCES users (id),
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (user_id, tenant_id)
) STRICT;

-- Every change made through the API: who, what, on which tenant and object, when, from where.
-- Append-only: nothing updates or deletes these rows.
CREATE TABLE audit_events (
    id             TEXT    NOT NULL PRIMARY KEY,
    at             INTEGER NOT NULL,
    principal_id   TEXT    NOT NULL,
    principal_name TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    tenant_id      TEXT,
    target_id      TEXT,
    client_ip      TEXT
) STRICT;

CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_events_principal ON audit_events (principal_id, id);
