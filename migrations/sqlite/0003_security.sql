-- Security: ids that are never reused, credential lineage, a revocation log that every node
-- reads, and an audit trail that attackers cannot write as someone else.

-- Ids of users, organizations and robots are never handed out twice (AUTOINCREMENT), so nothing
-- that names an id can ever point at a newer object of the same name or number.
CREATE TABLE users_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    password_hash   TEXT,
    admin           INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    -- Bumped by every password change: sessions record the epoch they were opened with.
    password_epoch  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO users_new (id, name, password_hash, admin, created_at)
    SELECT id, name, password_hash, admin, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;

CREATE TABLE orgs_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
INSERT INTO orgs_new SELECT id, name, created_at FROM orgs;
DROP TABLE orgs;
ALTER TABLE orgs_new RENAME TO orgs;

CREATE TABLE robots_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   INTEGER NOT NULL,
    UNIQUE (org_id, name)
);
INSERT INTO robots_new SELECT id, org_id, name, description, created_at FROM robots;
DROP TABLE robots;
ALTER TABLE robots_new RENAME TO robots;

-- Lineage. `source`: the revocation key of what a session or derived credential came from
-- ('cred:<id>' or 'pw:<user id>:<epoch>'); deleting that ends it. `family`: refresh tokens of one
-- login share it; reuse of a rotated one ends the family. `creator`: 'robot:<id>' when a robot
-- made it (it dies with the robot).
ALTER TABLE credentials ADD COLUMN source TEXT;
ALTER TABLE credentials ADD COLUMN family TEXT;
ALTER TABLE credentials ADD COLUMN creator TEXT;
CREATE INDEX credentials_by_source ON credentials (source) WHERE source IS NOT NULL;
CREATE INDEX credentials_by_family ON credentials (family) WHERE family IS NOT NULL;
CREATE INDEX credentials_by_creator ON credentials (creator) WHERE creator IS NOT NULL;

-- Keys of everything revoked ('cred:<id>', 'fam:<id>', 'pw:<uid>:<epoch>', 'user:<id>',
-- 'robot:<id>', 'ns:<name>@<org id>.<created>'); every node reads the new rows every few seconds and refuses bearer
-- tokens that name one. Rows older than the longest token lifetime are pruned.
CREATE TABLE revocations (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    key  TEXT NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX revocations_by_at ON revocations (at);

-- Failed logins: the user name typed is kept apart from the actor (never an identity), and
-- repeated failures from one address are one row per window with a count.
ALTER TABLE audit_events ADD COLUMN attempted TEXT;
ALTER TABLE audit_events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
