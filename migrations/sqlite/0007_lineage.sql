-- Provenance: every object that grants (a credential, a session family, a trust, a robot, a
-- binding) has one row per revocation key of what created it. Revoking a key ends every object
-- derived from it, transitively (`store::iam::Writer::revoke`).
CREATE TABLE lineage (
    source  TEXT NOT NULL,
    object  TEXT NOT NULL,
    PRIMARY KEY (source, object)
);
CREATE INDEX lineage_by_object ON lineage (object);

-- Rotation makes a new generation of a credential: logins name `gen:<id>:<n>`, and what they
-- created ends with that generation.
ALTER TABLE credentials ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
-- When an expired credential's offspring were ended (an expiry ends what was made through it).
ALTER TABLE credentials ADD COLUMN ended_at INTEGER;
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL AND ended_at IS NULL;
CREATE INDEX credentials_by_overlap ON credentials (previous_until) WHERE previous_until IS NOT NULL;

-- Policy epochs: a registry token names its subject's epoch; a change that takes access away
-- (a binding, a role, a membership) moves the epoch and revokes the old one.
CREATE TABLE policy_epochs (
    subject  TEXT PRIMARY KEY,
    epoch    INTEGER NOT NULL
);

-- Invitations: an owner who is not a server admin invites a user, who joins by accepting
-- (nobody is made a member without consent, and the answer does not say whether the user exists).
CREATE TABLE invitations (
    org_id      INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    role        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

-- What existed before: credentials made through a credential or by a robot, and sessions.
INSERT OR IGNORE INTO lineage (source, object)
    SELECT source, 'cred:' || id FROM credentials
    WHERE source IS NOT NULL AND kind <> 'refresh_token';
INSERT OR IGNORE INTO lineage (source, object)
    SELECT creator, 'cred:' || id FROM credentials WHERE creator IS NOT NULL;
INSERT OR IGNORE INTO lineage (source, object)
    SELECT DISTINCT source, 'fam:' || family FROM credentials
    WHERE source IS NOT NULL AND family IS NOT NULL AND kind = 'refresh_token';
