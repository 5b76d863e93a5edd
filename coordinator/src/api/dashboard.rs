//! The operators' dashboard: one page and its script and style, built into the binary
//! (nothing is fetched at run time, from here or elsewhere). The page holds no data: it asks
//! for an API token, keeps it in the tab's session storage, and calls the same API as the CLI
//! with it — what a reader's token may not do, the page does not offer.
//!
//! Served with a content security policy that allows only this origin's script, style and
//! API calls, so a node name or an error text shown on the page cannot run as script.

use crate::Shared;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// What the page may load: its own script and style, its own API.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new coordinator's page replaces the old one at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // Every script and style the page names is one this module serves, and the script
        // calls nothing but the API's own origin.
        for src in ["/ui/app.js", "/ui/app.css"] {
            assert!(INDEX.contains(src), "index.html names {src}");
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        // (The SVG namespace is a name, not a place anything is fetched from.)
        let script = SCRIPT.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(!script.contains("http://") && !script.contains("https://"));
        // No inline script or style: the policy would refuse it.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(POLICY.contains("script-src 'self'"));
    }
}
