//! The API's errors: problem documents.

/// A problem document (RFC 9457): `type`, `title`, `status`, `detail`, and Ferric's stable
/// `code`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Problem type URI; `about:blank` (the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, naming the object.
    pub detail: String,
    /// Stable, machine-readable cause (`unknown_node`, `invalid_plan`, …).
    pub code: String,
}
