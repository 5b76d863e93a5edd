//! The API's gate: every route but the probes and the OpenAPI document needs an API token
//! (`Authorization: Bearer ID.SECRET`); the route says which role it needs, an object named in
//! the path must belong to a project the caller sees (another project's answers as unknown),
//! and every mutating call — refused ones too — goes to the audit log.
//!
//! An image blob (`/images/sha256/{hex}`) is read with a token of a project holding an image
//! of that content, or with an agent's client certificate shown in the TLS handshake (the
//! agent's image credential): its node's project must hold such an image. The certificate
//! opens nothing else.

use super::ApiError;
use crate::Shared;
use crate::conductor::ConductorError;
use crate::conductor::access::{self, AuthFailure, Caller};
use crate::model::ApiRole;
use crate::store::AuditRow;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The stable code of a failed call, left on its response for the audit log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProblemCode(pub &'static str);

/// Who may call a route: nobody needs a token (`None`), or the role it needs.
pub(crate) fn needed(method: &Method, route: &str) -> Option<ApiRole> {
    match route {
        "/live" | "/ready" | super::OPENAPI_PATH => return None,
        "/v1/audit" => return Some(ApiRole::Admin),
        _ => {}
    }
    if read_only(method) {
        return Some(ApiRole::Reader);
    }
    Some(match (method.as_str(), route) {
        // A token may revoke itself; the conductor says whose else.
        ("DELETE", "/v1/api-tokens/{id}") => ApiRole::Reader,
        ("POST", "/v1/tokens" | "/v1/api-tokens" | "/v1/projects" | "/v1/nodes")
        | ("DELETE", "/v1/nodes/{name}")
        | ("POST", "/v1/nodes/{name}/revoke") => ApiRole::Admin,
        _ => ApiRole::Member,
    })
}

fn read_only(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A 401 with the reason and how to authenticate.
/// The 401 problem of `f`.
pub(super) fn auth_error(f: &AuthFailure) -> ApiError {
    ApiError::Image {
        status: StatusCode::UNAUTHORIZED,
        code: f.code(),
        detail: f.to_string(),
    }
}

fn unauthorized(f: &AuthFailure) -> Response {
    let mut resp = auth_error(f).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferric\""),
    );
    resp
}

/// The `project` of the query, if any (axum's own query decoding).
fn query_project(req: &Request) -> Option<String> {
    axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(req.uri())
        .ok()?
        .0
        .remove("project")
}

/// The project of the object a route names, and the error its absence would give.
async fn object_project(
    s: &Shared,
    route: &str,
    params: &RawPathParams,
) -> Result<Option<(String, ConductorError)>, ConductorError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let found = if route.starts_with("/v1/nodes/{name}") {
        let Some(n) = param("name") else {
            return Ok(None);
        };
        s.store
            .node_project(&n)
            .await?
            .map(|p| (p, ConductorError::UnknownNode(n)))
    } else if route.starts_with("/v1/guests/{name}") {
        let Some(n) = param("name") else {
            return Ok(None);
        };
        s.store
            .guest_project(&n)
            .await?
            .map(|p| (p, ConductorError::UnknownGuest(n)))
    } else if route.starts_with("/v1/plans/{id}") {
        let Some(id) = param("id").and_then(|i| i.parse::<i64>().ok()) else {
            return Ok(None);
        };
        s.store
            .plan_project(id)
            .await?
            .map(|p| (p, ConductorError::UnknownPlan(id as u64)))
    } else if route.starts_with("/v1/images/{name}") {
        let Some(n) = param("name") else {
            return Ok(None);
        };
        s.store.image_project(&n).await?.map(|p| {
            (
                p,
                ConductorError::UnknownImage(format!("image `{n}` does not exist")),
            )
        })
    } else {
        None
    };
    Ok(found)
}

/// The middleware.
pub(crate) async fn gate(
    State(s): State<Arc<Shared>>,
    matched: Option<MatchedPath>,
    params: RawPathParams,
    mut req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().clone();
    let Some(role) = needed(&method, &route) else {
        return next.run(req).await;
    };
    let path = crate::conductor::access::audit_path(req.uri().path());
    let mut audit = AuditRow {
        id: 0,
        at_ms: crate::now_ms(),
        token_id: None,
        project: None,
        role: None,
        method: method.to_string(),
        path,
        status: 0,
        code: None,
    };
    let resp = match admit(&s, &route, &params, role, &mut req).await {
        Ok(caller) => {
            audit.token_id = Some(caller.token.clone());
            audit.role = Some(caller.role.to_string());
            audit.project = audit.project.take().or(Some(caller.project.clone()));
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(resp) => {
            if let Some(c) = resp.extensions().get::<Caller>() {
                audit.token_id = Some(c.token.clone());
                audit.role = Some(c.role.to_string());
                audit.project = Some(c.project.clone());
            }
            resp
        }
    };
    if resp.status() == StatusCode::UNAUTHORIZED && audit.token_id.is_none() {
        // No valid token: counted, summed up in the audit log once a minute (anyone may send
        // these; each written whole, a flood filled the disk).
        let code = resp
            .extensions()
            .get::<ProblemCode>()
            .map_or("unauthenticated", |c| c.0);
        crate::conductor::access::count_unauthenticated(&s, code);
        return resp;
    }
    if !read_only(&method) {
        audit.status = i64::from(resp.status().as_u16());
        audit.code = resp
            .extensions()
            .get::<ProblemCode>()
            .map(|c| c.0.to_owned());
        if let Err(e) = s.store.audit(&audit).await {
            tracing::error!(error = %e, method = %audit.method, path = %audit.path, "cannot write the audit log");
        }
    }
    resp
}

/// The route of the image blobs.
const BLOB: &str = "/images/sha256/{hex}";

/// The blob's caller: an agent by its certificate, else a token's holder; either must see a
/// project with an image of this content (another's blob answers as unknown).
async fn admit_blob(
    s: &Shared,
    params: &RawPathParams,
    peer: Option<String>,
    authorization: Option<Result<String, header::ToStrError>>,
    project: Option<String>,
) -> Result<Caller, Response> {
    let unknown = || {
        ApiError::from(ConductorError::UnknownImage("no such image blob".into())).into_response()
    };
    let hex = params
        .iter()
        .find(|(k, _)| *k == "hex")
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    let projects = s
        .store
        .image_projects(&hex)
        .await
        .map_err(|e| ApiError::from(ConductorError::from(e)).into_response())?;
    if let Some(node) = peer {
        let project = s
            .store
            .node_project(&node)
            .await
            .map_err(|e| ApiError::from(ConductorError::from(e)).into_response())?;
        let Some(project) = project else {
            // A verified certificate of a node deleted since.
            return Err(unauthorized(&AuthFailure::UnknownNode(node)));
        };
        if !projects.contains(&project) {
            return Err(unknown());
        }
        return Ok(Caller {
            token: format!("node:{node}"),
            role: ApiRole::Reader,
            scope: Some(project.clone()),
            project,
        });
    }
    let token = match authorization {
        None => return Err(unauthorized(&AuthFailure::MissingForBlob)),
        Some(v) => match v.ok().as_deref().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) => t.trim().to_owned(),
            None => return Err(unauthorized(&AuthFailure::Malformed)),
        },
    };
    let caller = match access::authenticate(s, &token, project.as_deref()).await {
        Ok(Ok(c)) => c,
        Ok(Err(f)) => return Err(unauthorized(&f)),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    if projects.iter().any(|p| caller.sees(p)) {
        Ok(caller)
    } else {
        Err(unknown())
    }
}

/// The caller, if it may call this route on this object; otherwise the answer.
async fn admit(
    s: &Shared,
    route: &str,
    params: &RawPathParams,
    role: ApiRole,
    req: &mut Request,
) -> Result<Caller, Response> {
    if route == BLOB {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<super::listen::Peer>>()
            .and_then(|c| c.0.node.clone());
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        return admit_blob(s, params, peer, authorization, query_project(req)).await;
    }
    let token = match req.headers().get(header::AUTHORIZATION) {
        None => return Err(unauthorized(&AuthFailure::Missing)),
        Some(v) => match v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) => t.trim().to_owned(),
            None => return Err(unauthorized(&AuthFailure::Malformed)),
        },
    };
    let project = query_project(req);
    let caller = match access::authenticate(s, &token, project.as_deref()).await {
        Ok(Ok(c)) => c,
        Ok(Err(f)) => return Err(unauthorized(&f)),
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let refuse = |e: ConductorError, caller: &Caller| {
        let mut resp = ApiError::from(e).into_response();
        resp.extensions_mut().insert(caller.clone());
        resp
    };
    if let Err(e) = caller.require(role) {
        return Err(refuse(e, &caller));
    }
    match object_project(s, route, params).await {
        Ok(Some((p, unknown))) if !caller.sees(&p) => Err(refuse(unknown, &caller)),
        Ok(_) => Ok(caller),
        Err(e) => Err(refuse(e, &caller)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_role_its_effect_asks() {
        let cases = [
            (Method::GET, "/live", None),
            // A reader's token, or an agent's certificate (see `admit_blob`).
            (Method::GET, "/images/sha256/{hex}", Some(ApiRole::Reader)),
            (Method::GET, "/v1/nodes", Some(ApiRole::Reader)),
            (Method::GET, "/v1/audit", Some(ApiRole::Admin)),
            (
                Method::POST,
                "/v1/nodes/{name}/power",
                Some(ApiRole::Member),
            ),
            (Method::PUT, "/v1/images/{name}", Some(ApiRole::Member)),
            (Method::POST, "/v1/nodes", Some(ApiRole::Admin)),
            (Method::POST, "/v1/tokens", Some(ApiRole::Admin)),
            (
                Method::POST,
                "/v1/nodes/{name}/revoke",
                Some(ApiRole::Admin),
            ),
            (Method::DELETE, "/v1/api-tokens/{id}", Some(ApiRole::Reader)),
        ];
        for (m, r, want) in cases {
            assert_eq!(needed(&m, r), want, "{m} {r}");
        }
    }

    #[test]
    fn the_query_project_is_decoded() {
        let req = |q: &str| {
            Request::builder()
                .uri(format!("/v1/nodes{q}"))
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(
            query_project(&req("?a=1&project=team%2Dx&b")).as_deref(),
            Some("team-x")
        );
        assert_eq!(query_project(&req("")), None);
    }
}
