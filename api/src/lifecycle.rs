//! A bare-metal node's lifecycle: the verbs asked of it and what it is doing.

use crate::model::{Phase, ProvisionState, Verb};
use ferric_proto::plan::{ConfigFile, EraseMode, RootHint};
use serde::{Deserialize, Serialize};

/// A config drive's label and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigDrive {
    /// `cidata` (NoCloud) or `config-2` (OpenStack).
    pub label: String,
    /// Its files.
    pub files: Vec<ConfigFile>,
}

/// Body of `POST /v1/nodes/{name}/provision`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProvisionRequest {
    /// The verb.
    pub verb: Verb,
    /// For `provide`: how to erase (default: the one last asked, else metadata).
    #[serde(default)]
    pub erase: Option<EraseMode>,
    /// For `deploy`: the image name (`rebuild` writes the last one again).
    #[serde(default)]
    pub image: Option<String>,
    /// For `deploy`: an image fetched by the node's ramdisk from this URL instead of the
    /// store (not with `image`).
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
    /// For `deploy`: which disk is the root disk.
    #[serde(default)]
    pub root: Option<RootHint>,
    /// For `deploy`: a config drive of these files, as they are.
    #[serde(default)]
    pub config_drive: Option<ConfigDrive>,
    /// For `deploy`: a config drive the coordinator writes — host name, SSH keys, user data,
    /// and the network from the node's ports (`PUT /v1/nodes/{name}/network`). Not with
    /// `config_drive`; with neither, the deploy writes none.
    #[serde(default)]
    pub instance: Option<InstanceConfig>,
}

/// An image at a URL, with the checksum it must have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageUrl {
    /// `http://` or `https://` (checked against the ramdisk's CA bundle, Debian's).
    pub url: String,
    /// `sha256:HEX`, required: the ramdisk checks it as the bytes arrive and fails the
    /// deploy naming both digests when they differ.
    pub checksum: String,
    /// `raw` or `qcow2`; content that differs is refused. Absent: as the content says.
    #[serde(default)]
    pub format: Option<String>,
}

/// Most bytes of user data a config drive carries.
pub const USER_DATA_MAX: usize = 64 * 1024;

/// What a config drive the coordinator writes says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Host name; the node's name when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// SSH public keys for the image's default user.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// User data for cloud-init (`#cloud-config`, a script, …), at most 64 KiB.
    #[serde(default)]
    pub user_data: Option<String>,
    /// The drive's layout: `nocloud` (label `cidata`) or `config-2` (OpenStack's, which
    /// Glean reads too).
    #[serde(default)]
    pub format: ConfigDriveFormat,
}

/// A config drive's layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ConfigDriveFormat {
    /// cloud-init's NoCloud: `meta-data`, `user-data`, `network-config`; label `cidata`.
    #[default]
    #[serde(rename = "nocloud")]
    NoCloud,
    /// OpenStack's: `openstack/latest/{meta_data.json,user_data,network_data.json}`; label
    /// `config-2`.
    #[serde(rename = "config-2")]
    Config2,
}

/// A deploy's progress, from the ramdisk's telemetry.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressView {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: Option<u64>,
    /// Rate over the last samples.
    pub bytes_per_sec: Option<f64>,
    /// Seconds left at that rate.
    pub eta_secs: Option<f64>,
}

/// A node's lifecycle as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LifecycleView {
    /// Node.
    pub node: String,
    /// Provision state.
    pub state: ProvisionState,
    /// What it is doing.
    pub step: Option<Phase>,
    /// That, for people.
    pub doing: Option<String>,
    /// Since when, ms since the epoch.
    pub since_ms: i64,
    /// When the step fails if it has not ended.
    pub deadline_ms: Option<i64>,
    /// The plan it waits for.
    pub wait_plan: Option<u64>,
    /// The last failure.
    pub error: Option<String>,
    /// When.
    pub error_at_ms: Option<i64>,
    /// The image it runs or is given.
    pub image: Option<String>,
    /// How far the step is.
    pub progress: Option<ProgressView>,
    /// Its recent transitions, oldest first.
    pub transitions: Vec<Transition>,
}

/// One transition.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TransitionRow)]
pub struct Transition {
    /// Order within the node.
    pub seq: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// The step entered.
    pub step: Option<String>,
    /// What caused it (`verb manage`, `plan 12 ended`, `ramdisk called back`, `deadline`).
    pub cause: String,
    /// The failure's reason, when it was one.
    pub error: Option<String>,
}
