-- The statuses of recent imports (GET /imports), so that they and their
-- ids survive a restart of the ingest service: the JSON status of each,
-- written when it starts and when it ends; only the newest ones are kept.
CREATE TABLE imports (
    id         bigint      PRIMARY KEY,
    status     jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
