-- Schema version 4: the change feed. Every applied state batch, registration and fact
-- change adds a row in the same transaction; the site engine follows it by sequence
-- number, so several management points can share one store and nothing is missed.
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client TEXT NOT NULL,
    at INTEGER NOT NULL
);
