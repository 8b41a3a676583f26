-- The organization an audit event belongs to (NULL: none, e.g. a user's own sign-in), so that an
-- organization's owners read everything that happened in it.
ALTER TABLE audit_events ADD COLUMN org TEXT;
CREATE INDEX audit_events_by_org ON audit_events (org, id);
