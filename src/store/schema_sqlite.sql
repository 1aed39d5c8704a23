-- patchops store schema, SQLite flavour (schema version 1).
--
-- The same logical schema as schema_postgres.sql: same tables, columns and views, with
-- the same names. Times are INTEGER unix seconds (UTC). JSON columns are TEXT here and
-- JSONB in PostgreSQL. Every statement is idempotent; the store records the applied
-- version in `schema_version` and runs this file only when the version is behind.
--
-- Reporting views (query them with any SQL client, or `SqliteStore::query_rows`):
--
--   v_client_last_scan   Last scan state of every client (seed reports "Scan 1 – Last
--                        scan states by collection" and "Scan 2 – by site"):
--                        client, site (facts.site), role (facts.role), agent_version,
--                        last_scan_time (ISO-8601 UTC text of the latest scan attempt,
--                        successful or failed), catalog_version (that attempt's),
--                        scan_state ('Succeeded' | 'Failed' | 'Never scanned'),
--                        error (the failure's error when scan_state = 'Failed').
--                        Filter by site or role, e.g.
--                          SELECT * FROM v_client_last_scan WHERE site = 'paris';
--
--   v_agent_versions     client, agent_version ordered by agent_version (clients that
--                        never reported a version first, then by client): the seed's
--                          SELECT Netbios_Name0, Version0
--                          FROM v_GS_WINDOWSUPDATEAGENTVERSION ... ORDER BY Version0
--
--   v_update_compliance  Per update of the current catalog: id, kb, title,
--                        classification, severity and four client counts that add up to
--                        the number of clients:
--                          required     reported Missing, or installed with a reboot
--                                       pending (enforcement 6 = PendingReboot);
--                          installed    reported Installed, no reboot pending;
--                          unknown      the client has no usable scan: never scanned,
--                                       its last scan failed (failure at or after the
--                                       scan), a state message was rejected at or after
--                                       the scan, or the scan is older than the
--                                       `scan_ttl_seconds` setting (default 86400);
--                                       or the client did not report the update and
--                                       scanned a catalog older than the update;
--                          not_required every other client (not applicable).
--                        A client counted as unknown is counted nowhere else.
--
--   v_deployment_status  Status of every UpdateDeployment from the last reconcile:
--                        namespace, name, phase, compliance_percent, targeted,
--                        compliant, required, unknown (machine counts), deadline.

CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER NOT NULL PRIMARY KEY,
    applied_at INTEGER NOT NULL
);

-- Catalog versions: one row per saved catalog whose content differed from the previous.
CREATE TABLE IF NOT EXISTS catalog_versions (
    version      INTEGER NOT NULL PRIMARY KEY,
    digest       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    update_count INTEGER NOT NULL
);

-- A stable integer key per update id, never reused (compliance rows refer to it).
CREATE TABLE IF NOT EXISTS updates (
    key           INTEGER NOT NULL PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    first_version INTEGER NOT NULL
);

-- Row-versioned catalog content: a row is valid for versions valid_from <= v < valid_to;
-- the current catalog is the rows with valid_to IS NULL. body is the Update as JSON.
CREATE TABLE IF NOT EXISTS catalog_updates (
    key            INTEGER NOT NULL REFERENCES updates (key),
    valid_from     INTEGER NOT NULL,
    valid_to       INTEGER,
    kb             TEXT,
    title          TEXT    NOT NULL,
    classification TEXT    NOT NULL,
    severity       TEXT    NOT NULL,
    released       TEXT    NOT NULL,
    superseded     BOOLEAN NOT NULL,
    expired        BOOLEAN NOT NULL,
    body           TEXT    NOT NULL,
    PRIMARY KEY (key, valid_from)
);
CREATE INDEX IF NOT EXISTS catalog_updates_current ON catalog_updates (key) WHERE valid_to IS NULL;
-- Deltas between versions read the rows that start or end in a range of versions.
CREATE INDEX IF NOT EXISTS catalog_updates_from ON catalog_updates (valid_from);
CREATE INDEX IF NOT EXISTS catalog_updates_to ON catalog_updates (valid_to);

CREATE TABLE IF NOT EXISTS clients (
    key                     INTEGER NOT NULL PRIMARY KEY,
    name                    TEXT    NOT NULL UNIQUE,
    facts                   TEXT    NOT NULL DEFAULT '{}',
    agent_version           TEXT,
    registered_at           INTEGER NOT NULL,
    last_seen               INTEGER NOT NULL,
    last_sequence           INTEGER NOT NULL DEFAULT 0,
    scan_time               INTEGER,
    scan_catalog_version    INTEGER,
    failure_time            INTEGER,
    failure_catalog_version INTEGER,
    failure_error           TEXT,
    pending_messages        INTEGER NOT NULL DEFAULT 0,
    rejected_at             INTEGER
);

-- One row per (client, reported update): ~20 million rows in large fleets, so no rowid
-- and the primary key order is the order load_fleet reads.
-- scan_result: 0 Missing, 1 Installed; enforcement: compliance::Enforcement as u8.
CREATE TABLE IF NOT EXISTS compliance (
    client_key  INTEGER  NOT NULL REFERENCES clients (key),
    update_key  INTEGER  NOT NULL REFERENCES updates (key),
    scan_result SMALLINT NOT NULL,
    enforcement SMALLINT NOT NULL,
    time        INTEGER  NOT NULL,
    PRIMARY KEY (client_key, update_key)
) WITHOUT ROWID;

-- State messages that could not be processed (T1.U4), kept verbatim.
CREATE TABLE IF NOT EXISTS rejected_messages (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    client      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    raw         TEXT    NOT NULL,
    error       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS rejected_messages_client ON rejected_messages (client, received_at);

-- Client policy documents, named by ETag, and which document each client gets.
CREATE TABLE IF NOT EXISTS policy_docs (
    etag TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS client_policies (
    client TEXT NOT NULL PRIMARY KEY,
    etag   TEXT NOT NULL
);

-- Status of every resource after the last reconcile, its history (a row per change)
-- and the reconciles themselves.
CREATE TABLE IF NOT EXISTS resource_status (
    kind            TEXT    NOT NULL,
    namespace       TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    revision        TEXT    NOT NULL,
    catalog_version INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS status_history (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    time            INTEGER NOT NULL,
    revision        TEXT    NOT NULL,
    catalog_version INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    namespace       TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    status          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS status_history_resource ON status_history (kind, namespace, name, time);
CREATE TABLE IF NOT EXISTS reconciles (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    time            INTEGER NOT NULL,
    revision        TEXT    NOT NULL,
    catalog_version INTEGER NOT NULL
);

-- Settings the reconciler writes and the views read.
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO settings (key, value) VALUES ('scan_ttl_seconds', '86400') ON CONFLICT (key) DO NOTHING;

DROP VIEW IF EXISTS v_client_last_scan;
CREATE VIEW v_client_last_scan AS
SELECT
    c.name AS client,
    json_extract(c.facts, '$.site') AS site,
    json_extract(c.facts, '$.role') AS role,
    c.agent_version,
    strftime('%Y-%m-%dT%H:%M:%SZ', s.attempt_time, 'unixepoch') AS last_scan_time,
    s.attempt_version AS catalog_version,
    s.scan_state,
    CASE WHEN s.scan_state = 'Failed' THEN c.failure_error END AS error
FROM clients c
JOIN (
    SELECT
        key,
        CASE
            WHEN failure_time IS NOT NULL AND (scan_time IS NULL OR failure_time >= scan_time) THEN 'Failed'
            WHEN scan_time IS NOT NULL THEN 'Succeeded'
            ELSE 'Never scanned'
        END AS scan_state,
        CASE
            WHEN failure_time IS NOT NULL AND (scan_time IS NULL OR failure_time >= scan_time) THEN failure_time
            ELSE scan_time
        END AS attempt_time,
        CASE
            WHEN failure_time IS NOT NULL AND (scan_time IS NULL OR failure_time >= scan_time) THEN failure_catalog_version
            ELSE scan_catalog_version
        END AS attempt_version
    FROM clients
) s ON s.key = c.key;

DROP VIEW IF EXISTS v_agent_versions;
CREATE VIEW v_agent_versions AS
SELECT name AS client, agent_version
FROM clients
ORDER BY agent_version NULLS FIRST, name;

DROP VIEW IF EXISTS v_update_compliance;
CREATE VIEW v_update_compliance AS
WITH params AS (
    SELECT
        COALESCE((SELECT CAST(value AS INTEGER) FROM settings WHERE key = 'scan_ttl_seconds'), 86400) AS ttl,
        CAST(strftime('%s', 'now') AS INTEGER) AS now
),
usable AS (
    SELECT c.key, c.scan_catalog_version
    FROM clients c, params p
    WHERE c.scan_time IS NOT NULL
      AND (c.failure_time IS NULL OR c.failure_time < c.scan_time)
      AND (c.rejected_at IS NULL OR c.rejected_at < c.scan_time)
      AND c.scan_time + p.ttl >= p.now
),
totals AS (
    SELECT (SELECT COUNT(*) FROM clients) AS all_clients, (SELECT COUNT(*) FROM usable) AS usable_clients
),
cur AS (
    SELECT cu.key, u.id, u.first_version, cu.kb, cu.title, cu.classification, cu.severity
    FROM catalog_updates cu JOIN updates u ON u.key = cu.key
    WHERE cu.valid_to IS NULL
),
reported AS (
    SELECT co.update_key AS key,
        SUM(CASE WHEN co.scan_result = 0 OR co.enforcement = 6 THEN 1 ELSE 0 END) AS required,
        SUM(CASE WHEN co.scan_result = 1 AND co.enforcement <> 6 THEN 1 ELSE 0 END) AS installed
    FROM compliance co JOIN usable us ON us.key = co.client_key
    GROUP BY co.update_key
),
not_scanned AS (
    SELECT cur.key, COUNT(*) AS n
    FROM cur JOIN usable us ON us.scan_catalog_version < cur.first_version
    WHERE NOT EXISTS (SELECT 1 FROM compliance co WHERE co.client_key = us.key AND co.update_key = cur.key)
    GROUP BY cur.key
)
SELECT
    cur.id, cur.kb, cur.title, cur.classification, cur.severity,
    COALESCE(r.required, 0) AS required,
    COALESCE(r.installed, 0) AS installed,
    t.all_clients - t.usable_clients + COALESCE(ns.n, 0) AS unknown,
    t.usable_clients - COALESCE(r.required, 0) - COALESCE(r.installed, 0) - COALESCE(ns.n, 0) AS not_required
FROM cur
CROSS JOIN totals t
LEFT JOIN reported r ON r.key = cur.key
LEFT JOIN not_scanned ns ON ns.key = cur.key
ORDER BY cur.id;

DROP VIEW IF EXISTS v_deployment_status;
CREATE VIEW v_deployment_status AS
SELECT
    namespace,
    name,
    json_extract(status, '$.phase') AS phase,
    json_extract(status, '$.compliancePercent') AS compliance_percent,
    json_extract(status, '$.targeted') AS targeted,
    json_extract(status, '$.machines.compliant') AS compliant,
    json_extract(status, '$.machines.required') AS required,
    json_extract(status, '$.machines.unknown') AS unknown,
    json_extract(status, '$.deadline') AS deadline
FROM resource_status
WHERE kind = 'UpdateDeployment'
ORDER BY namespace, name;
