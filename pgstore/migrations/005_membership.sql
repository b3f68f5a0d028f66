-- The ring's membership, versioned. One row per ring version: 'active' for
-- the serving one (the newest active row), 'preparing' while a membership
-- change pulls its slots (at most one), 'retired' once a newer one serves,
-- 'cancelled' for a change reverted before it served. members is
-- [{"name","url"}, ...], assignment [[primary, replica, ...], ...] by slot.
CREATE TABLE rings (
    version      bigint      PRIMARY KEY,
    state        text        NOT NULL CHECK (state IN ('preparing', 'active', 'retired', 'cancelled')),
    replicas     integer     NOT NULL,
    slots        integer     NOT NULL,
    members      jsonb       NOT NULL,
    assignment   jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    ended_at     timestamptz
);
CREATE UNIQUE INDEX rings_one_preparing ON rings ((true)) WHERE state = 'preparing';

-- A read node's report that it holds every slot of a preparing ring for a
-- dataset version (the active one when it reported): the ring activates
-- once every member reported for the version active then.
CREATE TABLE ring_prepared (
    ring_version    bigint      NOT NULL REFERENCES rings (version) ON DELETE CASCADE,
    node            text        NOT NULL,
    dataset_version bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ring_version, node)
);
