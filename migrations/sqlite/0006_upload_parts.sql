-- With S3, where an upload session stands in the bucket (its multipart upload, parts, tail and
-- hash state, as JSON), so that any node takes the next chunk without reading the others back.
ALTER TABLE uploads ADD COLUMN s3_state TEXT;
