-- Images in the store: content-addressed by sha256 (several names may share a blob).
CREATE TABLE images (
    name            TEXT PRIMARY KEY,
    sha256          TEXT NOT NULL,
    sha512          TEXT NOT NULL,
    format          TEXT NOT NULL,
    wrapper         TEXT,
    virtual_size    BIGINT,
    size            BIGINT NOT NULL,
    details         TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX images_sha256 ON images(sha256);
