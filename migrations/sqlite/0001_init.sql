-- Registry metadata: repositories, the blobs they hold, manifests, tags, upload sessions.
-- Timestamps are Unix seconds. Digests are stored as their canonical text ("sha256:<hex>").

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- One row per stored blob, however many repositories hold it.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- A repository serves only the blobs linked here (pushed or mounted into it).
CREATE TABLE repo_blobs (
    repo_id     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    linked_at   INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX repo_blobs_by_digest ON repo_blobs (digest);

CREATE TABLE manifests (
    id            INTEGER PRIMARY KEY,
    repo_id       INTEGER NOT NULL,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    size          INTEGER NOT NULL,
    content       BLOB NOT NULL,
    pushed_at     INTEGER NOT NULL,
    UNIQUE (repo_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repo_id, subject) WHERE subject IS NOT NULL;

-- What each manifest references: kind 0 = blob (config, layers), 1 = manifest (index entries).
CREATE TABLE manifest_refs (
    repo_id          INTEGER NOT NULL,
    manifest_digest  TEXT NOT NULL,
    ref_digest       TEXT NOT NULL,
    kind             INTEGER NOT NULL,
    PRIMARY KEY (repo_id, manifest_digest, ref_digest)
) WITHOUT ROWID;
CREATE INDEX manifest_refs_by_ref ON manifest_refs (ref_digest, repo_id);

CREATE TABLE tags (
    repo_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE INDEX tags_by_digest ON tags (repo_id, digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo_id     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
