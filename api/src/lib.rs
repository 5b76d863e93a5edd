//! Ferric's HTTP API as its callers see it: the documents each route takes and gives (their
//! OpenAPI schemas derive here), the coordinator's vocabulary ([`model`]), and the API's
//! HTTP [`client`].
//!
//! The coordinator serves these types and converts its store rows into them; the command
//! line, the tests and the benchmarks read them. Nothing here knows the store, the conductor
//! or the link: a column renamed in the store does not change what the API says.

pub mod access;
pub mod bmcs;
pub mod client;
pub mod guests;
pub mod images;
pub mod lifecycle;
pub mod model;
pub mod network;
pub mod nodes;
pub mod plans;
pub mod problem;
pub mod records;

pub use client::{Client, ClientError};
pub use problem::Problem;

/// The admin credentials file a coordinator writes in its data directory (mode 0600): `api`,
/// `ca` and a fleet admin `token`, read by the command line on that machine.
pub const ADMIN_CONF: &str = "admin.conf";
