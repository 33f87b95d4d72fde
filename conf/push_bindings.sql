-- res_push: push bindings shared by several Asterisk nodes through sorcery's realtime wizard.
--
-- One row per binding: `id` is the binding id (stable, see docs/architecture.md), every other
-- column is a field of the sorcery object type `push_binding` (res_push_core::shared::FIELDS;
-- the realtime wizard reads and writes exactly these names, so add no other column).
-- Times are Unix seconds. The row with id 'res-push-health' is no binding: nodes read it to
-- tell an empty answer from an unreachable database.
--
-- PostgreSQL (res_config_pgsql, or res_config_odbc over psqlODBC):
--   psql -d asterisk -f /usr/share/res-push/push_bindings.sql
-- then, in Asterisk's configuration:
--   extconfig.conf   [settings]
--                    push_bindings => pgsql,general,push_bindings
--                    ; or, through res_odbc:  push_bindings => odbc,asterisk,push_bindings
--   sorcery.conf     [res_push]
--                    push_binding = realtime,push_bindings
--   res_pgsql.conf   [general] dbhost, dbport, dbname, dbuser, dbpass
-- Portable SQL: the same table works on SQLite through res_odbc, and on MySQL/MariaDB once
-- `IF NOT EXISTS` is removed from the CREATE INDEX below (MySQL does not know it there).

CREATE TABLE IF NOT EXISTS push_bindings (
    id            VARCHAR(40)  PRIMARY KEY,
    aor           VARCHAR(255) NOT NULL DEFAULT '',
    provider      VARCHAR(16)  NOT NULL DEFAULT '',
    app_id        VARCHAR(255) NOT NULL DEFAULT '',
    token         VARCHAR(4096) NOT NULL DEFAULT '',
    environment   VARCHAR(16)  NOT NULL DEFAULT '',
    form          VARCHAR(16)  NOT NULL DEFAULT '',
    contact_uri   VARCHAR(4096) NOT NULL DEFAULT '',
    user_agent    VARCHAR(255) NOT NULL DEFAULT '',
    instance      VARCHAR(255) NOT NULL DEFAULT '',
    ua_pnsreg     VARCHAR(3)   NOT NULL DEFAULT 'no',
    created       BIGINT       NOT NULL DEFAULT 0,
    last_register BIGINT       NOT NULL DEFAULT 0,
    expires_at    BIGINT       NOT NULL DEFAULT 0,
    failures      INTEGER      NOT NULL DEFAULT 0,
    reg_server    VARCHAR(255) NOT NULL DEFAULT '',
    alert_token   VARCHAR(4096) NOT NULL DEFAULT ''
);

-- Calls look bindings up by AOR.
CREATE INDEX IF NOT EXISTS push_bindings_aor ON push_bindings (aor);
