-- The repository view pages tags newest push first: an index in that order, so a page is read
-- without sorting every tag of the repository.
CREATE INDEX tags_by_push ON tags (repo_id, updated_at, name);
