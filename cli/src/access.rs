//! `ferric api-token …`, `ferric project …`, `ferric audit`, `ferric whoami`: who may use the
//! API and what they did.

use super::Client;
use super::output::{print_item, print_json, table};
use anyhow::Result;
use clap::Subcommand;
use ferric_api::access::{
    ApiToken, AuditEntry, CreateApiToken, CreateProject, CreatedApiToken, Project,
};
use ferric_api::model::ApiRole;
use std::time::Duration;

/// `ferric api-token …`.
#[derive(Debug, Subcommand)]
pub enum ApiTokenCmd {
    /// Create an API token; its secret is printed this once.
    Create {
        /// What it may do: reader, member or admin.
        #[arg(long)]
        role: ApiRole,
        /// Its project (default: the caller's, or `default` for a fleet token's caller).
        #[arg(long, conflicts_with = "fleet")]
        project: Option<String>,
        /// Over the whole fleet instead of one project (fleet admins only).
        #[arg(long)]
        fleet: bool,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime (default: until revoked).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List the tokens you govern (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke {
        /// The token's id (the part before the dot).
        id: String,
    },
}

/// `ferric project …`.
#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project (fleet admins).
    Create {
        /// Name (a DNS label).
        name: String,
        /// Most bytes of images it may keep (`100G`).
        #[arg(long, value_parser = |s: &str| super::output::parse_size(s).map_err(|e| e.to_string()))]
        image_quota: Option<u64>,
    },
    /// List the projects you see.
    List,
}

/// A time as people read it beside now: `12s ago`, `in 3600s`, or `-`.
fn when(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            let d = ms - crate::output::now_ms();
            if d > 0 {
                format!("in {}s", d / 1000)
            } else {
                super::output::ago(Some(ms))
            }
        }
    }
}

fn token_table(rows: &[ApiToken]) -> String {
    table(
        &[
            "ID",
            "ROLE",
            "SCOPE",
            "CREATED",
            "EXPIRES",
            "REVOKED",
            "USED",
            "DESCRIPTION",
        ],
        rows,
        |t| {
            vec![
                t.id.clone(),
                t.role.to_string(),
                t.project.clone().unwrap_or_else(|| "fleet".into()),
                when(Some(t.created_at_ms)),
                t.expires_at_ms
                    .map_or_else(|| "never".into(), |e| when(Some(e))),
                when(t.revoked_at_ms),
                when(t.last_used_ms),
                t.description.clone(),
            ]
        },
    )
}

/// Runs `ferric api-token …`.
pub(super) async fn api_token(client: &Client, cmd: ApiTokenCmd, json: bool) -> Result<()> {
    match cmd {
        ApiTokenCmd::Create {
            role,
            project,
            fleet,
            description,
            ttl,
        } => {
            let t: CreatedApiToken = client
                .post(
                    "/v1/api-tokens",
                    &CreateApiToken {
                        role,
                        project,
                        fleet,
                        description,
                        ttl_secs: ttl.map(|t| t.as_secs().max(1)),
                    },
                )
                .await?;
            print_item(json, &t, |t| {
                format!(
                    "token: {}\n\nit is shown this once; use it with --token, FERRIC_TOKEN or a config file (token = \"…\")\n\n{}",
                    t.token,
                    token_table(std::slice::from_ref(&t.info))
                )
            })
        }
        ApiTokenCmd::List => {
            let rows: Vec<ApiToken> = client.get("/v1/api-tokens").await?;
            print_item(json, &rows, |r| token_table(r))
        }
        ApiTokenCmd::Revoke { id } => {
            let row: ApiToken = client.delete(&format!("/v1/api-tokens/{id}")).await?;
            print_item(json, &row, |r| format!("API token `{}` revoked", r.id))
        }
    }
}

/// Runs `ferric project …`.
pub(super) async fn project(client: &Client, cmd: ProjectCmd, json: bool) -> Result<()> {
    let quota = |q: Option<i64>| q.map_or_else(|| "-".into(), |q| format!("{q}"));
    match cmd {
        ProjectCmd::Create { name, image_quota } => {
            let p: Project = client
                .post(
                    "/v1/projects",
                    &CreateProject {
                        name,
                        image_quota_bytes: image_quota,
                    },
                )
                .await?;
            print_item(json, &p, |p| format!("project `{}` created", p.name))
        }
        ProjectCmd::List => {
            let rows: Vec<Project> = client.get("/v1/projects").await?;
            print_item(json, &rows, |r| {
                table(&["NAME", "IMAGE QUOTA (BYTES)"], r, |p| {
                    vec![p.name.clone(), quota(p.image_quota_bytes)]
                })
            })
        }
    }
}

/// Runs `ferric audit`.
pub(super) async fn audit(client: &Client, limit: u32, json: bool) -> Result<()> {
    let rows: Vec<AuditEntry> = client.get(&format!("/v1/audit?limit={limit}")).await?;
    if json {
        return print_json(&rows);
    }
    println!(
        "{}",
        table(
            &["WHEN", "TOKEN", "ROLE", "PROJECT", "CALL", "STATUS", "CODE"],
            &rows,
            |a| vec![
                when(Some(a.at_ms)),
                a.token_id.clone().unwrap_or_else(|| "-".into()),
                a.role.clone().unwrap_or_else(|| "-".into()),
                a.project.clone().unwrap_or_else(|| "-".into()),
                format!("{} {}", a.method, a.path),
                a.status.to_string(),
                a.code.clone().unwrap_or_default(),
            ]
        )
    );
    Ok(())
}

/// Runs `ferric whoami`.
pub(super) async fn whoami(client: &Client, json: bool) -> Result<()> {
    let w: ferric_api::access::WhoAmI = client.get("/v1/whoami").await?;
    print_item(json, &w, |w| {
        format!(
            "token {} — {} in {}",
            w.token,
            w.role,
            w.scope
                .as_deref()
                .map_or_else(|| "the fleet".to_owned(), |p| format!("project `{p}`"))
        )
    })
}
