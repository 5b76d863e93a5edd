//! Who may use the API: API tokens, projects, the audit log.

use crate::model::ApiRole;
use serde::{Deserialize, Serialize};

/// `POST /v1/api-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateApiToken {
    /// Its role.
    pub role: ApiRole,
    /// Its project; absent: the caller's (a fleet caller: `fleet: true` for a fleet token).
    #[serde(default)]
    pub project: Option<String>,
    /// A token over the whole fleet (only a fleet admin may make one).
    #[serde(default)]
    pub fleet: bool,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Lifetime in seconds; absent: until revoked.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A new API token: its secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedApiToken {
    /// `ID.SECRET`, for `Authorization: Bearer`.
    pub token: String,
    /// What is stored of it.
    pub info: ApiToken,
}

/// `POST /v1/projects`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateProject {
    /// Name (a DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Most bytes of images it may keep; absent: no quota beyond the upload limit.
    #[serde(default)]
    pub image_quota_bytes: Option<u64>,
}

/// What `POST /v1/nodes/{name}/revoke` did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    /// The node.
    pub node: String,
    /// Certificates of an older generation are refused from now on.
    pub cert_generation: i64,
    /// Whether a live connection was closed.
    pub disconnected: bool,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The token's id.
    pub token: String,
    /// Its role.
    pub role: crate::model::ApiRole,
    /// Its project; absent: the whole fleet.
    pub scope: Option<String>,
    /// The project this call acted in.
    pub project: String,
}

/// A project as stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ProjectRow)]
pub struct Project {
    /// Name.
    pub name: String,
    /// Most bytes of images it may keep; `None`: the coordinator's default (or none).
    pub image_quota_bytes: Option<i64>,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
}

/// An API token as stored (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ApiTokenRow)]
pub struct ApiToken {
    /// Its id (the part before the dot).
    pub id: String,
    /// Its project; `None`: the whole fleet.
    pub project: Option<String>,
    /// What it may do there.
    pub role: ApiRole,
    /// What it is for.
    pub description: String,
    /// The token that made it.
    pub created_by: Option<String>,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Expiry, ms since the epoch; `None`: until revoked.
    pub expires_at_ms: Option<i64>,
    /// Revoked at, ms since the epoch.
    pub revoked_at_ms: Option<i64>,
    /// Last used, ms since the epoch.
    pub last_used_ms: Option<i64>,
}

/// One audited call.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuditRow)]
pub struct AuditEntry {
    /// Order.
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The token's id; `None` when the call carried no valid token.
    pub token_id: Option<String>,
    /// The project the call acted in (`None` for fleet-wide calls and refused ones).
    pub project: Option<String>,
    /// The caller's role.
    pub role: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// HTTP status of the answer.
    pub status: i64,
    /// The problem's stable code when it failed.
    pub code: Option<String>,
}
