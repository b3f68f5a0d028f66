-- Dataset versions. A version is 'building' while its rows are copied,
-- 'committed' once durable and announced (in the same transaction as its
-- outbox row), 'dropped' when retention removed its rows.
CREATE TABLE datasets (
    version      bigint PRIMARY KEY,
    name         text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('building', 'committed', 'dropped')),
    rows         bigint      NOT NULL DEFAULT 0,
    duplicates   bigint      NOT NULL DEFAULT 0,
    slots        integer     NOT NULL,
    partitions   integer     NOT NULL,
    checksum     text        NOT NULL DEFAULT '',
    source       text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    committed_at timestamptz,
    activated_at timestamptz,
    dropped_at   timestamptz
);

-- Rows and checksum of every slot of a version, so that a read node can
-- check the shard it pulled.
CREATE TABLE dataset_slots (
    version  bigint  NOT NULL REFERENCES datasets (version) ON DELETE CASCADE,
    slot     integer NOT NULL,
    rows     bigint  NOT NULL,
    checksum bigint  NOT NULL,
    PRIMARY KEY (version, slot)
);

-- Events to publish, written in the transaction that commits a version and
-- marked sent once the broker acknowledged them.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz,
    attempts   integer     NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;

-- What each read node has prepared or serves; retention keeps a version
-- while a node still serves it.
CREATE TABLE node_versions (
    node       text        NOT NULL,
    version    bigint      NOT NULL,
    state      text        NOT NULL CHECK (state IN ('prepared', 'serving')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, version)
);
