-- Multi-tenant access control: tenant assignments and operation limits of API keys, users
-- (principals that will sign in through JWT/OIDC later) and their tenant assignments, and the
-- audit log. Kept in step with migrations/sqlite/0002_access_control.sql.
--
-- Roles: 'administrator' sees every tenant; 'technician', 'viewer' and 'integration' see only
-- the tenants assigned to them in *_tenants. An integration key is also limited to the
-- operations listed in api_key_operations.

CREATE TABLE api_key_tenants (
    api_key_id uuid NOT NULL REFERENCES api_keys (id),
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (api_key_id, tenant_id)
);

CREATE TABLE api_key_operations (
    api_key_id uuid NOT NULL REFERENCES api_keys (id),
    operation  text NOT NULL,
    PRIMARY KEY (api_key_id, operation)
);

CREATE TABLE users (
    id         uuid        NOT NULL PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    role       text        NOT NULL
        CHECK (role IN ('administrator', 'technician', 'viewer', 'integration')),
    created_at timestamptz NOT NULL
);

CREATE TABLE user_tenants (
    user_id   uuid NOT NULL REFERENCES users (id),
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (user_id, tenant_id)
);

-- Every change made through the API: who, what, on which tenant and object, when, from where.
-- Append-only: nothing updates or deletes these rows.
CREATE TABLE audit_events (
    id             uuid        NOT NULL PRIMARY KEY,
    at             timestamptz NOT NULL,
    principal_id   uuid        NOT NULL,
    principal_name text        NOT NULL,
    action         text        NOT NULL,
    tenant_id      uuid,
    target_id      uuid,
    client_ip      text
);

CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_events_principal ON audit_events (principal_id, id);
