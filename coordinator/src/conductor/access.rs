//! Who may do what through the API: API tokens with a role within a scope (one project, or
//! the whole fleet), the projects that own nodes and images, the first admin token, the
//! audit log, and the revocation of a node's certificates.
//!
//! A project-scoped caller sees its project only: another project's objects answer as if they
//! did not exist. A fleet-scoped caller sees every project and acts in the one it names
//! (`?project=`, `default` otherwise).

use super::{ConductorError, Result, invalid};
use crate::Shared;
use crate::model::{ApiRole, check_node_name};
use crate::store::{ApiTokenRow, AuditRow, ProjectRow};
pub use ferric_api::access::{
    ApiToken, AuditEntry, CreateApiToken, CreateProject, CreatedApiToken, Project, Revoked,
};
use rand::Rng;
use std::time::Duration;

/// The project everything belongs to unless said otherwise.
pub const DEFAULT_PROJECT: &str = "default";

/// Longest lifetime an API token can be given (without one it lasts until revoked).
pub const MAX_API_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Who is calling, as their token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's id.
    pub token: String,
    /// Its role.
    pub role: ApiRole,
    /// Its project; `None`: the whole fleet.
    pub scope: Option<String>,
    /// The project the call acts in (what it creates lands there).
    pub project: String,
}

impl Caller {
    /// Whether objects of `project` are visible to the caller.
    pub fn sees(&self, project: &str) -> bool {
        self.scope.as_deref().is_none_or(|p| p == project)
    }

    /// Whether the caller is scoped to the whole fleet.
    pub fn fleet(&self) -> bool {
        self.scope.is_none()
    }

    /// Refuses the call unless the caller's role allows what `needed` may do.
    pub fn require(&self, needed: ApiRole) -> Result<()> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ConductorError::Forbidden(format!(
                "this needs the {needed} role; token `{}` is {} in {}",
                self.token,
                self.role,
                self.scope_name()
            )))
        }
    }

    /// The scope, as said to people.
    pub fn scope_name(&self) -> String {
        match &self.scope {
            Some(p) => format!("project `{p}`"),
            None => "the fleet".into(),
        }
    }
}

/// Why a request's credential was not accepted (the API answers 401 with this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization` header.
    #[error(
        "this call needs an API token: `Authorization: Bearer ID.SECRET` (the CLI: --token, FERRIC_TOKEN or its config file)"
    )]
    Missing,
    /// An image blob asked for with neither a token nor an agent certificate.
    #[error(
        "an image blob needs an API token (`Authorization: Bearer ID.SECRET`) or an agent's client certificate in the TLS handshake"
    )]
    MissingForBlob,
    /// A verified agent certificate of a node that is no longer enrolled.
    #[error("the client certificate names node `{0}`, which is not enrolled")]
    UnknownNode(String),
    /// Not `Bearer ID.SECRET`.
    #[error("the Authorization header is not `Bearer ID.SECRET`")]
    Malformed,
    /// Unknown id or wrong secret.
    #[error("the API token is not valid")]
    Invalid,
    /// Revoked.
    #[error("API token `{0}` was revoked")]
    Revoked(String),
    /// Past its expiry.
    #[error("API token `{0}` has expired")]
    Expired(String),
}

impl AuthFailure {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing | AuthFailure::MissingForBlob => "unauthenticated",
            AuthFailure::UnknownNode(_) => "unknown_certificate",
            AuthFailure::Malformed | AuthFailure::Invalid => "invalid_token",
            AuthFailure::Revoked(_) => "token_revoked",
            AuthFailure::Expired(_) => "token_expired",
        }
    }
}

/// Whether `caller`'s token still stands, for a call that outlives its admission (a live
/// stream): `Some` names why it no longer does.
pub async fn still_admitted(s: &Shared, caller: &Caller) -> Result<Option<AuthFailure>> {
    if caller.token.starts_with("node:") {
        // An agent's certificate, checked by the TLS handshake of its connection.
        return Ok(None);
    }
    let Some(row) = s.store.api_token_by_id(&caller.token).await? else {
        return Ok(Some(AuthFailure::Invalid));
    };
    if row.revoked_at_ms.is_some() {
        return Ok(Some(AuthFailure::Revoked(row.id)));
    }
    if row.expires_at_ms.is_some_and(|e| crate::now_ms() >= e) {
        return Ok(Some(AuthFailure::Expired(row.id)));
    }
    Ok(None)
}

/// Who holds `token` (`ID.SECRET`), acting in `project` (`None`: its own, or `default`).
pub async fn authenticate(
    s: &Shared,
    token: &str,
    project: Option<&str>,
) -> Result<std::result::Result<Caller, AuthFailure>> {
    let Some((id, secret)) = token
        .split_once('.')
        .filter(|(i, s)| !i.is_empty() && !s.is_empty())
    else {
        return Ok(Err(AuthFailure::Malformed));
    };
    let Some(row) = s
        .store
        .api_token(id, &crate::pki::token_secret_hash(secret))
        .await?
    else {
        return Ok(Err(AuthFailure::Invalid));
    };
    let now = crate::now_ms();
    if row.revoked_at_ms.is_some() {
        return Ok(Err(AuthFailure::Revoked(row.id)));
    }
    if row.expires_at_ms.is_some_and(|e| now >= e) {
        return Ok(Err(AuthFailure::Expired(row.id)));
    }
    s.store.api_token_used(&row.id, now).await?;
    let acting = match (&row.project, project) {
        (Some(own), None) => own.clone(),
        (Some(own), Some(p)) if p == own => own.clone(),
        // Another project's name answers as an unknown one: projects are not listed to
        // outsiders.
        (Some(_), Some(p)) => return Err(ConductorError::UnknownProject(p.to_owned())),
        (None, None) => DEFAULT_PROJECT.to_owned(),
        (None, Some(p)) => {
            if s.store.project(p).await?.is_none() {
                return Err(ConductorError::UnknownProject(p.to_owned()));
            }
            p.to_owned()
        }
    };
    Ok(Ok(Caller {
        token: row.id,
        role: row.role,
        scope: row.project,
        project: acting,
    }))
}

fn new_secret(id_len: usize) -> (String, String) {
    let mut rng = rand::rng();
    let id: String = (0..id_len)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect();
    let mut secret = [0u8; 24];
    rng.fill(&mut secret);
    (id, hex::encode(secret))
}

async fn store_token(
    s: &Shared,
    role: ApiRole,
    project: Option<String>,
    description: String,
    created_by: Option<String>,
    ttl: Option<Duration>,
) -> Result<CreatedApiToken> {
    let (id, secret) = new_secret(10);
    let now = crate::now_ms();
    let row = ApiTokenRow {
        id: id.clone(),
        project,
        role,
        description,
        created_by,
        created_at_ms: now,
        expires_at_ms: ttl.map(|t| now + t.as_millis() as i64),
        revoked_at_ms: None,
        last_used_ms: None,
    };
    s.store
        .create_api_token(&row, &crate::pki::token_secret_hash(&secret))
        .await?;
    tracing::info!(token_id = %id, role = %role, project = ?row.project, "API token created");
    Ok(CreatedApiToken {
        token: format!("{id}.{secret}"),
        info: row.into(),
    })
}

/// A new API token within what the caller governs: a project admin makes tokens of its
/// project, a fleet admin of any project or of the fleet.
pub async fn create_api_token(
    s: &Shared,
    caller: &Caller,
    req: CreateApiToken,
) -> Result<CreatedApiToken> {
    caller.require(ApiRole::Admin)?;
    let project = if req.fleet {
        if req.project.is_some() {
            return Err(invalid(
                "a token is either of a project or of the fleet, not both",
            ));
        }
        if !caller.fleet() {
            return Err(ConductorError::Forbidden(format!(
                "only a fleet admin may make fleet tokens; token `{}` is admin in {}",
                caller.token,
                caller.scope_name()
            )));
        }
        None
    } else {
        let p = req.project.unwrap_or_else(|| caller.project.clone());
        if !caller.sees(&p) || s.store.project(&p).await?.is_none() {
            return Err(ConductorError::UnknownProject(p));
        }
        Some(p)
    };
    let ttl = match req.ttl_secs {
        None => None,
        Some(secs) => {
            let t = Duration::from_secs(secs);
            if t.is_zero() || t > MAX_API_TOKEN_TTL {
                return Err(invalid(format!(
                    "ttl must be between 1s and {}",
                    humantime::format_duration(MAX_API_TOKEN_TTL)
                )));
            }
            Some(t)
        }
    };
    if req.description.len() > 200 {
        return Err(invalid("the description is longer than 200 bytes"));
    }
    store_token(
        s,
        req.role,
        project,
        req.description,
        Some(caller.token.clone()),
        ttl,
    )
    .await
}

/// The tokens the caller governs (an admin's: its scope's; others see only their own).
pub async fn list_api_tokens(s: &Shared, caller: &Caller) -> Result<Vec<ApiToken>> {
    Ok(s.store
        .api_tokens()
        .await?
        .into_iter()
        .filter(|t| governs(caller, t) || t.id == caller.token)
        .map(ApiToken::from)
        .collect())
}

fn governs(caller: &Caller, t: &ApiTokenRow) -> bool {
    caller.role == ApiRole::Admin
        && match (&caller.scope, &t.project) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        }
}

/// Revokes a token the caller governs (or its own).
pub async fn revoke_api_token(s: &Shared, caller: &Caller, id: &str) -> Result<ApiToken> {
    let found = s
        .store
        .api_tokens()
        .await?
        .into_iter()
        .find(|t| t.id == id && (governs(caller, t) || t.id == caller.token))
        .ok_or_else(|| ConductorError::UnknownToken(id.to_owned()))?;
    s.store.revoke_api_token(id, crate::now_ms()).await?;
    tracing::info!(token_id = %id, by = %caller.token, "API token revoked");
    Ok(ApiTokenRow {
        revoked_at_ms: found.revoked_at_ms.or(Some(crate::now_ms())),
        ..found
    }
    .into())
}

/// A new project (a fleet admin's act).
pub async fn create_project(s: &Shared, caller: &Caller, req: CreateProject) -> Result<Project> {
    caller.require(ApiRole::Admin)?;
    if !caller.fleet() {
        return Err(ConductorError::Forbidden(format!(
            "only a fleet admin may create projects; token `{}` is admin in {}",
            caller.token,
            caller.scope_name()
        )));
    }
    check_node_name(&req.name).map_err(|e| invalid(format!("project name `{}` {e}", req.name)))?;
    let quota = req
        .image_quota_bytes
        .map(|q| i64::try_from(q).map_err(|_| invalid("image_quota_bytes is too large")))
        .transpose()?;
    let row = ProjectRow {
        name: req.name.clone(),
        image_quota_bytes: quota,
        created_at_ms: crate::now_ms(),
    };
    if !s.store.create_project(&row).await? {
        return Err(ConductorError::ProjectExists(req.name));
    }
    Ok(row.into())
}

/// The projects the caller sees.
pub async fn list_projects(s: &Shared, caller: &Caller) -> Result<Vec<Project>> {
    Ok(s.store
        .projects()
        .await?
        .into_iter()
        .filter(|p| caller.sees(&p.name))
        .map(Project::from)
        .collect())
}

/// The longest path an audit entry keeps (the rest is cut: a path is the caller's to choose).
pub const AUDIT_PATH_MAX: usize = 256;

/// `path` as the audit log keeps it: at most [`AUDIT_PATH_MAX`] characters, a cut one ending
/// in `…`.
pub fn audit_path(path: &str) -> String {
    if path.chars().count() <= AUDIT_PATH_MAX {
        return path.to_owned();
    }
    let mut cut: String = path.chars().take(AUDIT_PATH_MAX - 1).collect();
    cut.push('…');
    cut
}

/// Counts an API call refused for want of a valid token (`code` says why).
pub fn count_unauthenticated(s: &Shared, code: &'static str) {
    *crate::lock(&s.unauthenticated).entry(code).or_default() += 1;
    *crate::lock(&s.unauthenticated_total)
        .entry(code)
        .or_default() += 1;
}

/// Writes the calls refused without a valid token since the last time as one audit entry
/// (`*` `(N calls refused …)`, status 401, code `unauthenticated_calls`), if there were any.
pub async fn flush_unauthenticated(s: &Shared) -> Result<()> {
    let counts = std::mem::take(&mut *crate::lock(&s.unauthenticated));
    let n: u64 = counts.values().sum();
    if n == 0 {
        return Ok(());
    }
    let by: Vec<String> = counts.iter().map(|(c, k)| format!("{c} {k}")).collect();
    let row = AuditRow {
        id: 0,
        at_ms: crate::now_ms(),
        token_id: None,
        project: None,
        role: None,
        method: "*".into(),
        path: format!(
            "({n} calls refused without a valid token: {})",
            by.join(", ")
        ),
        status: 401,
        code: Some("unauthenticated_calls".into()),
    };
    if let Err(e) = s.store.audit(&row).await {
        // Counted again rather than lost.
        let mut g = crate::lock(&s.unauthenticated);
        for (c, k) in counts {
            *g.entry(c).or_default() += k;
        }
        return Err(e.into());
    }
    Ok(())
}

/// Keeps the audit log within its bounds: each minute the refused unauthenticated calls are
/// summed up in one entry, and every ten minutes entries past `--audit-retention` or beyond
/// the newest `--audit-max-rows` go.
pub async fn audit_upkeep(s: std::sync::Arc<Shared>) {
    let mut minute = tokio::time::interval(std::time::Duration::from_secs(60));
    minute.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = minute.tick() => {}
            _ = s.shutdown.cancelled() => {
                let _ = flush_unauthenticated(&s).await;
                return;
            }
        }
        if let Err(e) = flush_unauthenticated(&s).await {
            tracing::warn!(error = %e, "refused calls not summed up in the audit log");
        }
        if n.is_multiple_of(10) {
            let before = crate::now_ms() - s.config.audit_retention.as_millis() as i64;
            match s.store.prune_audit(before, s.config.audit_max_rows).await {
                Ok(0) => {}
                Ok(gone) => tracing::info!(gone, "old audit entries removed"),
                Err(e) => tracing::warn!(error = %e, "audit log not pruned"),
            }
        }
        n += 1;
    }
}

/// The audit log of the caller's scope, newest first (admins); the calls refused without a
/// valid token are summed up first, so the log is up to date.
pub async fn audit_log(s: &Shared, caller: &Caller, limit: i64) -> Result<Vec<AuditEntry>> {
    caller.require(ApiRole::Admin)?;
    let limit = limit.clamp(1, 10_000);
    flush_unauthenticated(s).await?;
    Ok(s.store
        .audit_log(caller.scope.as_deref(), limit)
        .await?
        .into_iter()
        .map(AuditEntry::from)
        .collect())
}

/// The first admin token (fleet scope), when no token exists yet: what `admin.conf` holds.
pub async fn first_admin_token(s: &Shared) -> Result<Option<CreatedApiToken>> {
    if s.store.any_api_token().await? {
        return Ok(None);
    }
    store_token(
        s,
        ApiRole::Admin,
        None,
        "first admin token, made at first start".into(),
        None,
        None,
    )
    .await
    .map(Some)
}

/// Revokes every certificate the node holds: its agent is refused at its next handshake and
/// its live connection is closed now. (A hypervisor or management agent must be deleted and
/// enrolled again; a bare-metal node's next ramdisk gets a certificate of the new generation.)
pub async fn revoke_node(s: &Shared, caller: &Caller, node: &str) -> Result<Revoked> {
    caller.require(ApiRole::Admin)?;
    let generation = s
        .store
        .revoke_node_certs(node)
        .await?
        .ok_or_else(|| ConductorError::UnknownNode(node.to_owned()))?;
    s.pki.revocations().set(node, generation);
    let disconnected = s.hub.links.connected_since(node).is_some();
    s.hub
        .links
        .disconnect(node, b"the node's certificate was revoked");
    tracing::warn!(node, generation, by = %caller.token, "node certificates revoked");
    Ok(Revoked {
        node: node.to_owned(),
        cert_generation: generation,
        disconnected,
    })
}

impl From<ApiTokenRow> for ApiToken {
    fn from(r: ApiTokenRow) -> Self {
        ApiToken {
            id: r.id,
            project: r.project,
            role: r.role,
            description: r.description,
            created_by: r.created_by,
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            revoked_at_ms: r.revoked_at_ms,
            last_used_ms: r.last_used_ms,
        }
    }
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Self {
        Project {
            name: r.name,
            image_quota_bytes: r.image_quota_bytes,
            created_at_ms: r.created_at_ms,
        }
    }
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id,
            at_ms: r.at_ms,
            token_id: r.token_id,
            project: r.project,
            role: r.role,
            method: r.method,
            path: r.path,
            status: r.status,
            code: r.code,
        }
    }
}
