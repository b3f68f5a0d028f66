-- The cluster's id, drawn once with the schema: 16 hex digits that caches
-- shared between clusters (Redis) put in their keys, so that two clusters,
-- or one whose database was created again (its version numbers start over
-- at 1), never read each other's entries. One row, never updated.
CREATE TABLE cluster_id (
    id         text        NOT NULL CHECK (id ~ '^[0-9a-f]{16}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    one_row    boolean     PRIMARY KEY DEFAULT true CHECK (one_row)
);
-- gen_random_uuid draws 122 random bits; md5 spreads them over the 64
-- kept (the UUID's own text has fixed version digits).
INSERT INTO cluster_id (id) VALUES (substr(md5(gen_random_uuid()::text), 1, 16));
