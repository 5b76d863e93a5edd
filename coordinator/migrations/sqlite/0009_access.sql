-- Who may use the API: projects own nodes and images (a guest and a plan belong to their
-- node's project); API tokens carry a role within a project or over the whole fleet, and
-- only a hash of their secret is kept; every mutating call is audited.
CREATE TABLE projects (
    name              TEXT PRIMARY KEY,
    image_quota_bytes BIGINT,
    created_at_ms     BIGINT NOT NULL
);
INSERT INTO projects (name, image_quota_bytes, created_at_ms) VALUES ('default', NULL, 0);

ALTER TABLE nodes ADD COLUMN project TEXT NOT NULL DEFAULT 'default' REFERENCES projects(name);
-- Certificates issued before this generation are refused at the handshake (revocation).
ALTER TABLE nodes ADD COLUMN cert_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN project TEXT NOT NULL DEFAULT 'default' REFERENCES projects(name);
-- A bootstrap token enrolls its agent into this project.
ALTER TABLE tokens ADD COLUMN project TEXT NOT NULL DEFAULT 'default' REFERENCES projects(name);
CREATE INDEX nodes_project ON nodes(project);
CREATE INDEX images_project ON images(project);

CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,
    secret_sha256   TEXT NOT NULL,
    -- NULL: the whole fleet.
    project         TEXT REFERENCES projects(name),
    role            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    created_by      TEXT,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT,
    revoked_at_ms   BIGINT,
    last_used_ms    BIGINT
);

CREATE TABLE audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms           BIGINT NOT NULL,
    token_id        TEXT,
    project         TEXT,
    role            TEXT,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    status          INTEGER NOT NULL,
    code            TEXT
);
CREATE INDEX audit_project ON audit(project, id);
