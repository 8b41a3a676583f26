-- Identity and access: organizations, namespaces, users, memberships, robots, credentials,
-- roles, bindings and audit events. Timestamps are Unix seconds.

CREATE TABLE orgs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- The first path segment of a repository name. Owned by one organization.
CREATE TABLE namespaces (
    name        TEXT PRIMARY KEY,
    org_id      INTEGER NOT NULL,
    public      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX namespaces_by_org ON namespaces (org_id);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    admin          INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

CREATE TABLE memberships (
    org_id   INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    PRIMARY KEY (org_id, user_id)
) WITHOUT ROWID;
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE robots (
    id           INTEGER PRIMARY KEY,
    org_id       INTEGER NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

-- Every long-lived secret: robot tokens, API keys, registry tokens, refresh tokens. Only the
-- SHA-256 of the secret is stored; the id is embedded in the secret, so a lookup is one read.
CREATE TABLE credentials (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('robot_token', 'api_key', 'registry_token', 'refresh_token')),
    name             TEXT,
    user_id          INTEGER,
    robot_id         INTEGER,
    org_id           INTEGER,
    secret_hash      BLOB NOT NULL,
    readwrite        INTEGER NOT NULL DEFAULT 0,
    description      TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    revoked_at       INTEGER,
    last_used_at     INTEGER,
    last_used_addr   TEXT,
    last_used_agent  TEXT
) WITHOUT ROWID;
CREATE INDEX credentials_by_robot ON credentials (robot_id) WHERE robot_id IS NOT NULL;
CREATE INDEX credentials_by_user ON credentials (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX credentials_by_org ON credentials (org_id, kind) WHERE org_id IS NOT NULL;

-- Custom roles of an organization; the built-in ones (Reader, Writer, Manager) live in code.
CREATE TABLE roles (
    org_id      INTEGER NOT NULL,
    name        TEXT NOT NULL,
    rules       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, name)
) WITHOUT ROWID;

-- subject (user or robot) x role x scope (org, namespace, or repository glob).
CREATE TABLE bindings (
    org_id        INTEGER NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    subject_kind  TEXT NOT NULL CHECK (subject_kind IN ('user', 'robot')),
    subject_id    INTEGER NOT NULL,
    scope_kind    TEXT NOT NULL CHECK (scope_kind IN ('org', 'namespace', 'repository')),
    scope         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (org_id, name)
) WITHOUT ROWID;
CREATE INDEX bindings_by_subject ON bindings (subject_kind, subject_id);

CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor        TEXT,
    action       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    target       TEXT,
    client_addr  TEXT,
    detail       TEXT
);
CREATE INDEX audit_events_by_at ON audit_events (at);
