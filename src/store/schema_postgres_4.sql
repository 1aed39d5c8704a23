-- Schema version 4: the change feed. Every applied state batch, registration and fact
-- change adds a row in the same transaction (and notifies channel patchops_feed on
-- commit); the site engine follows it by sequence number, so several management points
-- can share one database and nothing is missed after a dropped connection or a restart.
CREATE TABLE IF NOT EXISTS feed (
    seq BIGSERIAL PRIMARY KEY,
    client TEXT NOT NULL,
    at BIGINT NOT NULL
);
