-- Single sign-on: people from an OpenID provider, their groups, and groups as binding subjects.

-- Bindings may name a group (`subject_kind = 'group'`, `subject_id` an `idp_groups` id):
-- SQLite cannot alter a CHECK, so the table is rebuilt with the same rows.
CREATE TABLE bindings_new (
    org_id        INTEGER NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    subject_kind  TEXT NOT NULL CHECK (subject_kind IN ('user', 'robot', 'group')),
    subject_id    INTEGER NOT NULL,
    scope_kind    TEXT NOT NULL CHECK (scope_kind IN ('org', 'namespace', 'repository')),
    scope         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (org_id, name)
) WITHOUT ROWID;
INSERT INTO bindings_new (org_id, name, role, subject_kind, subject_id, scope_kind, scope, created_at, updated_at)
    SELECT org_id, name, role, subject_kind, subject_id, scope_kind, scope, created_at, updated_at FROM bindings;
DROP TABLE bindings;
ALTER TABLE bindings_new RENAME TO bindings;
CREATE INDEX bindings_by_subject ON bindings (subject_kind, subject_id);

-- A group as the providers name it; ids are never handed out twice.
CREATE TABLE idp_groups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- The groups a user's provider said at its last reading.
CREATE TABLE user_groups (
    user_id   INTEGER NOT NULL,
    group_id  INTEGER NOT NULL,
    PRIMARY KEY (user_id, group_id)
) WITHOUT ROWID;
CREATE INDEX user_groups_by_group ON user_groups (group_id, user_id);

-- A user made by a provider: linked by issuer and subject only. `epoch` moves when the provider
-- refuses the user; sessions and keys made through a sign-in name `sso:<user_id>:<epoch>`.
CREATE TABLE sso_links (
    issuer          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    provider        TEXT NOT NULL,
    user_id         INTEGER NOT NULL UNIQUE,
    epoch           INTEGER NOT NULL DEFAULT 0,
    groups_read_at  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    -- The provider's refresh token of the user's last ended session (sealed): while the user
    -- has no session but live credentials (API keys), the provider is asked with it.
    refresh_sealed  BLOB,
    read_at         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (issuer, subject)
);

-- A session opened through a provider: its refresh-token family, and the provider's refresh
-- token (sealed) with which the user's groups are read again.
CREATE TABLE sso_sessions (
    family          TEXT PRIMARY KEY,
    user_id         INTEGER NOT NULL,
    provider        TEXT NOT NULL,
    refresh_sealed  BLOB,
    read_at         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX sso_sessions_by_read ON sso_sessions (read_at);

-- Sign-in states, device codes and CLI codes already used (each works once), until they expire.
CREATE TABLE sso_used (
    id          TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
