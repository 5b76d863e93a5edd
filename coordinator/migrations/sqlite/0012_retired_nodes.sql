-- Names of deleted nodes with the certificate generation their certificates are refused
-- below: a deleted agent's (or ramdisk's) certificate does not come back when the name is
-- enrolled again; the new node's certificates start at this generation.
CREATE TABLE retired_nodes (
    name            TEXT PRIMARY KEY,
    cert_generation BIGINT NOT NULL,
    retired_at_ms   BIGINT NOT NULL
);
