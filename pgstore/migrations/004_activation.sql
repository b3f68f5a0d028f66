-- Which version the cluster serves, and since which activation. Every
-- activation (of an import's version once every slot is prepared, or of an
-- operator's POST /datasets/{version}/activate) raises the epoch; read
-- nodes stamp their answers with it, and "never go back" compares
-- (epoch, version), so that a deliberate rollback is followed. target is a
-- requested activation that read nodes are preparing; served_epoch is the
-- latest epoch that every slot served. One row.
CREATE TABLE activation (
    one_row      boolean     PRIMARY KEY DEFAULT true CHECK (one_row),
    epoch        bigint      NOT NULL DEFAULT 0,
    version      bigint      NOT NULL DEFAULT 0,
    activated_at timestamptz,
    target       bigint,
    requested_at timestamptz,
    served_epoch bigint      NOT NULL DEFAULT 0
);
-- A cluster that served before epochs existed: its newest activated
-- version serves, at epoch 1.
INSERT INTO activation (epoch, version, activated_at, served_epoch)
SELECT CASE WHEN d.version IS NULL THEN 0 ELSE 1 END, coalesce(d.version, 0), d.activated_at,
       CASE WHEN d.version IS NULL THEN 0 ELSE 1 END
FROM (SELECT 1) AS one
LEFT JOIN (SELECT version, activated_at FROM datasets
           WHERE state = 'committed' AND activated_at IS NOT NULL ORDER BY version DESC LIMIT 1) AS d ON true;

-- held_reason: why the activation guard (--min-rows-ratio) held the
-- version at its commit; it is activated only on purpose. epoch: the
-- epoch of the version's latest activation.
ALTER TABLE datasets ADD COLUMN held_reason text;
ALTER TABLE datasets ADD COLUMN epoch bigint;
UPDATE datasets SET epoch = 1 WHERE version = (SELECT version FROM activation WHERE version > 0);

-- The epoch at which a node serves a version (0 for prepared ones).
ALTER TABLE node_versions ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
