-- How a version's tables hold its records, written by the import so that a
-- read node knows what to pull instead of trying one form after another,
-- and refuses a form it does not know by its number: 1 is groups of
-- records of one slot, each packed in promotion.PackedLen (32) bytes
-- (pgstore.RecordForm). NULL for versions written before (by groups or
-- rows, as imports wrote before groups): a node tries groups, then rows.
ALTER TABLE datasets ADD COLUMN record_form smallint;
