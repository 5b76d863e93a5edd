//! The API's HTTP client: what the `ferric` command line, the tests and the benchmarks use to
//! talk to a coordinator.

use crate::nodes::{CreateToken, CreatedToken};
use crate::plans::{CreatePlans, CreatedPlan, PlanFile};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator could not be reached (or the connection broke).
    #[error("cannot reach the coordinator API at {base}: {source}")]
    Unreachable {
        /// The API's base URL.
        base: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The API answered with an error: its problem document's detail and code.
    #[error("{detail} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Stable code (`unknown_node`, …), or `http` for an answer without a problem document.
        code: String,
        /// What went wrong.
        detail: String,
    },
    /// The answer was not what the request expects.
    #[error("cannot decode the API's answer: {0}")]
    Decode(#[source] serde_json::Error),
    /// A file to send could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A client result.
pub type Result<T> = std::result::Result<T, ClientError>;

/// HTTP client of the API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    project: Option<String>,
    /// The pinned CA certificates (DER), when pinned.
    pinned: Option<Vec<Vec<u8>>>,
    token: Option<Secret>,
}

/// A token kept for image fetches; `Debug` shows nothing of it.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl Client {
    /// A client for the API at `base` (`https://host:port`) without a token (the probes only),
    /// trusting the system's CAs.
    pub fn new(base: &str) -> Self {
        Self::connect(base, None, None).unwrap_or_else(|_| Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            project: None,
            pinned: None,
            token: None,
        })
    }

    /// A client for the API at `base` that presents the API token `token` (`ID.SECRET`),
    /// trusting the system's CAs.
    pub fn with_token(base: &str, token: &str) -> Result<Self> {
        Self::connect(base, Some(token), None)
    }

    /// A client for the API at `base`, presenting `token` if any; with `ca_pem` (the
    /// coordinator's `ca.pem`) that CA is the only one trusted — the coordinator is pinned as
    /// its agents pin it — else the system's CAs are.
    pub fn connect(base: &str, token: Option<&str>, ca_pem: Option<&[u8]>) -> Result<Self> {
        // reqwest is built without a TLS provider of its own: Ferric uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bad = |detail: String| ClientError::Api {
            status: reqwest::StatusCode::BAD_REQUEST,
            code: "client_config".into(),
            detail,
        };
        let mut builder = reqwest::Client::builder();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Api {
                    status: reqwest::StatusCode::UNAUTHORIZED,
                    code: "invalid_token".into(),
                    detail: "the API token holds characters a header cannot".into(),
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        let mut pinned = None;
        if let Some(pem) = ca_pem {
            use rustls_pki_types::pem::PemObject;
            let ders = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("the CA file is not PEM certificates: {e}")))?;
            if ders.is_empty() {
                return Err(bad("the CA file holds no certificate".into()));
            }
            let certs = ders
                .iter()
                .map(|d| reqwest::Certificate::from_der(d))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("the CA file holds a bad certificate: {e}")))?;
            builder = builder.tls_certs_only(certs);
            pinned = Some(ders);
        }
        let http = builder.build().map_err(|source| ClientError::Unreachable {
            base: base.to_owned(),
            source,
        })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            project: None,
            pinned,
            token: token.map(|t| Secret(t.to_owned())),
        })
    }

    /// How to fetch `url` when it is one of this API's (an image blob): with the pinned CA
    /// and the token. `None` for any other URL, which gets neither.
    pub fn http_options_for(&self, url: &str) -> Option<ferric_images::source::HttpOptions> {
        let rest = url.strip_prefix(&self.base)?;
        if !rest.starts_with('/') {
            return None;
        }
        Some(ferric_images::source::HttpOptions {
            roots: self.pinned.clone().unwrap_or_default(),
            only_roots: self.pinned.is_some(),
            identity_pem: None,
            bearer: self.token.as_ref().map(|t| t.0.clone()),
        })
    }

    /// Every call acts in `project` (a fleet token's choice; `None`: the token's own).
    pub fn in_project(mut self, project: Option<String>) -> Self {
        self.project = project;
        self
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
        |source| ClientError::Unreachable {
            base: self.base.clone(),
            source,
        }
    }

    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let body = resp.bytes().await.map_err(self.unreachable())?;
        if !status.is_success() {
            // A problem document names the cause and its stable code; anything else is shown
            // as it came.
            return Err(match serde_json::from_slice::<crate::Problem>(&body) {
                Ok(p) => ClientError::Api {
                    status,
                    code: p.code,
                    detail: p.detail,
                },
                Err(_) => ClientError::Api {
                    status,
                    code: "http".into(),
                    detail: String::from_utf8_lossy(&body).trim().to_owned(),
                },
            });
        }
        serde_json::from_slice(&body).map_err(ClientError::Decode)
    }

    fn url(&self, path: &str) -> String {
        match &self.project {
            None => format!("{}{path}", self.base),
            Some(p) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                let p: String = p
                    .bytes()
                    .map(|b| match b {
                        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                            char::from(b).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect();
                format!("{}{path}{sep}project={p}", self.base)
            }
        }
    }

    /// Sends a request and decodes its JSON answer.
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req.send().await.map_err(self.unreachable())?;
        self.decode(resp).await
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    /// POST JSON, decode JSON.
    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// PUT JSON, decode JSON.
    pub async fn put<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// PATCH JSON, decode JSON.
    pub async fn patch<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    /// GET a text resource (`/live`, `/ready`, `/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(self.unreachable())?;
        if !resp.status().is_success() {
            return self
                .decode::<serde_json::Value>(resp)
                .await
                .map(|_| String::new());
        }
        resp.text().await.map_err(self.unreachable())
    }

    /// DELETE, decode JSON.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Creates a bootstrap token.
    pub async fn create_token(&self, ttl: Duration) -> Result<CreatedToken> {
        self.post(
            "/v1/tokens",
            &CreateToken {
                ttl_secs: ttl.as_secs(),
            },
        )
        .await
    }

    /// Applies a plan to nodes.
    pub async fn apply(&self, nodes: Vec<String>, plan: PlanFile) -> Result<Vec<CreatedPlan>> {
        self.post("/v1/plans", &CreatePlans { nodes, plan }).await
    }

    /// A plan's status as JSON.
    pub async fn plan(&self, id: u64) -> Result<serde_json::Value> {
        self.get(&format!("/v1/plans/{id}")).await
    }

    /// Streams an image file to the store; `progress(sent, total)` is called as it goes.
    pub async fn upload_image(
        &self,
        file: &std::path::Path,
        name: &str,
        format: Option<&str>,
        checksum: Option<&str>,
        mut progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<crate::images::ImageView> {
        use futures_util::StreamExt;
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|source| ClientError::File {
                path: file.to_owned(),
                source,
            })?;
        let total = f
            .metadata()
            .await
            .map_err(|source| ClientError::File {
                path: file.to_owned(),
                source,
            })?
            .len();
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).map(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
                progress(sent, total);
            }
            chunk
        });
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(f) = format {
            query.push(("format", f));
        }
        if let Some(c) = checksum {
            query.push(("checksum", c));
        }
        self.send(
            self.http
                .put(self.url(&format!("/v1/images/{name}")))
                .query(&query)
                .header(reqwest::header::CONTENT_LENGTH, total)
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await
    }
}
