-- See migrations/sqlite/0006_upload_parts.sql.
ALTER TABLE uploads ADD COLUMN s3_state TEXT;
