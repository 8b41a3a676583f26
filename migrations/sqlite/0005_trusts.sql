-- Workload identity: the external workloads (a Kubernetes service account, a CI job) that may
-- act as a robot by presenting a token from their platform's OpenID issuer. No secret is
-- stored: only what the presented token must say (issuer, subject pattern, audience, exact
-- claims) and, for clusters that cannot be reached, the issuer's public keys (a JWKS).
CREATE TABLE robot_trusts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    robot_id      INTEGER NOT NULL,
    name          TEXT NOT NULL,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    audience      TEXT,
    claims        TEXT NOT NULL DEFAULT '{}',
    jwks          TEXT,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    UNIQUE (robot_id, name)
);
CREATE INDEX robot_trusts_issuer ON robot_trusts (issuer);

-- Rotation with overlap: the secret a credential had before its last rotation, accepted until
-- `previous_until`.
ALTER TABLE credentials ADD COLUMN previous_hash BLOB;
ALTER TABLE credentials ADD COLUMN previous_until INTEGER;
