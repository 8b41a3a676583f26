-- On S3, a blob of at most 16 KiB (`content::INLINE_MAX`: image configs, small layers) is kept in
-- its row, written in the transaction that links it, and never sent to the bucket. NULL: the
-- bytes are in the blob store.
ALTER TABLE blobs ADD COLUMN data BYTEA;
