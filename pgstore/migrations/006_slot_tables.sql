-- The table of the version that holds each slot's rows: imports lay the
-- tables out by the ring's replica sets, so that a read node reads whole
-- tables of its slots only. NULL for versions written before: their table
-- i holds the contiguous slot range i of datasets.partitions.
ALTER TABLE dataset_slots ADD COLUMN part integer;
