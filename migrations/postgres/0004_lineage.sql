-- See migrations/sqlite/0007_lineage.sql.
CREATE TABLE lineage (
    source  TEXT NOT NULL,
    object  TEXT NOT NULL,
    PRIMARY KEY (source, object)
);
CREATE INDEX lineage_by_object ON lineage (object);

ALTER TABLE credentials ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
-- When an expired credential's offspring were ended (an expiry ends what was made through it).
ALTER TABLE credentials ADD COLUMN ended_at BIGINT;
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL AND ended_at IS NULL;
CREATE INDEX credentials_by_overlap ON credentials (previous_until) WHERE previous_until IS NOT NULL;

CREATE TABLE policy_epochs (
    subject  TEXT PRIMARY KEY,
    epoch    BIGINT NOT NULL
);

CREATE TABLE invitations (
    org_id      BIGINT NOT NULL,
    user_id     BIGINT NOT NULL,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

INSERT INTO lineage (source, object)
    SELECT source, 'cred:' || id FROM credentials
    WHERE source IS NOT NULL AND kind <> 'refresh_token'
    ON CONFLICT DO NOTHING;
INSERT INTO lineage (source, object)
    SELECT creator, 'cred:' || id FROM credentials WHERE creator IS NOT NULL
    ON CONFLICT DO NOTHING;
INSERT INTO lineage (source, object)
    SELECT DISTINCT source, 'fam:' || family FROM credentials
    WHERE source IS NOT NULL AND family IS NOT NULL AND kind = 'refresh_token'
    ON CONFLICT DO NOTHING;
