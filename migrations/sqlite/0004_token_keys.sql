-- Token signing keys kept in the metadata store (with PostgreSQL, so that every node signs and
-- verifies with the same keys). The embedded default keeps its keys in <data dir>/keys/; this
-- table is used when the keys live in the store. Private keys are sealed (AES-256-GCM, key
-- derived from the operator's secret key, the kid as associated data); `kind` is 'ca' or
-- 'signing'.
CREATE TABLE token_keys (
    kid         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('ca', 'signing')),
    created     INTEGER NOT NULL,
    cert_pem    TEXT NOT NULL,
    sealed_key  BLOB NOT NULL
) WITHOUT ROWID;

-- The bytes an upload session holds, committed after each chunk: with several nodes, the node
-- that receives the next chunk learns the offset here (not from its own memory).
ALTER TABLE uploads ADD COLUMN size INTEGER NOT NULL DEFAULT 0;

-- Failed logins counted across nodes (PostgreSQL; a single SQLite node counts in memory):
-- one row per limit key and minute, added to by every node, read before a suspicious attempt.
CREATE TABLE login_failures (
    key     TEXT NOT NULL,
    win     INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (key, win)
) WITHOUT ROWID;
