//! Which host paths a plan may name. A guest's serial log is written, and its kernel and
//! initrd are read, by libvirt's QEMU with the host's privileges: a plan that names
//! `/etc/shadow` as a serial log must not get it written. Such paths are confined to the
//! directories the agent was started with (`ferric-agent run --allow-path DIR`, beside the
//! defaults); anything else fails the step with the reason, before a driver sees it.
//!
//! Never allowed, whatever the directories: the agent's own state directory, and any
//! directory that holds a Ferric key or store — a coordinator's data directory (`ca.key`,
//! `secrets.key`, `ferric.db`) or an agent's (`node.key`) — so that a plan cannot read a
//! coordinator's CA key into a guest or append a console to its secrets key on a host that
//! runs both.

use ferric_proto::plan::{ErrorKind, GuestBoot, Step};
use std::path::{Component, Path, PathBuf};

/// Directories a plan may name paths in unless the agent is told more. (`/var/lib/ferric`,
/// the coordinator's default data directory, is not one.)
pub const DEFAULT_ALLOWED: &[&str] = &[
    "/var/log/ferric",
    "/var/lib/libvirt/boot",
    "/var/lib/libvirt/images",
];

/// Files whose presence marks a directory as Ferric's state: a coordinator's CA key, secrets
/// key or store, an agent's key.
pub const STATE_MARKERS: &[&str] = &["ca.key", "secrets.key", "ferric.db", "node.key"];

/// The directories a plan's paths must lie in, and those they never may.
#[derive(Debug, Clone)]
pub struct PathPolicy {
    allowed: Vec<PathBuf>,
    denied: Vec<PathBuf>,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy::new(DEFAULT_ALLOWED.iter().map(PathBuf::from))
    }
}

impl PathPolicy {
    /// A policy allowing `dirs` (each resolved through its symbolic links when it exists).
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        PathPolicy {
            allowed: dirs
                .into_iter()
                .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
                .collect(),
            denied: Vec::new(),
        }
    }

    /// The same, never allowing paths in `dirs` (the agent's state directory, its console
    /// directories), even inside an allowed one.
    pub fn denying(mut self, dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        self.denied.extend(
            dirs.into_iter()
                .map(|d| std::fs::canonicalize(&d).unwrap_or(d)),
        );
        self
    }

    /// The directories allowed.
    pub fn allowed(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// Whether every path `step` names is allowed; the refusal names the field and the path.
    pub fn check(&self, step: &Step) -> Result<(), (ErrorKind, String)> {
        let Step::EnsureGuest(spec) = step else {
            return Ok(());
        };
        let mut named: Vec<(&str, &str)> = Vec::new();
        if let Some(log) = &spec.serial_log {
            named.push(("serial_log", log));
        }
        if let GuestBoot::Kernel { kernel, initrd, .. } = &spec.boot {
            named.push(("boot.kernel", kernel));
            named.push(("boot.initrd", initrd));
        }
        for (field, p) in named {
            if let Some(state) = self.state_dir_of(Path::new(p)) {
                return Err((
                    ErrorKind::InvalidSpec,
                    format!(
                        "{field} `{p}` lies in {}, a Ferric state directory (keys, store, \
                         journal): plans never name paths there",
                        state.display()
                    ),
                ));
            }
            if !self.permits(Path::new(p)) {
                let dirs: Vec<String> = self
                    .allowed
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                return Err((
                    ErrorKind::InvalidSpec,
                    format!(
                        "{field} `{p}` is outside the directories this agent may use ({}); start \
                         it with `--allow-path DIR` to add one",
                        dirs.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether `p` lies in an allowed directory: absolute, no `..`, and (resolving the
    /// symbolic links of what exists of it) still inside one.
    pub fn permits(&self, p: &Path) -> bool {
        if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return false;
        }
        let resolved = resolve(p);
        self.allowed.iter().any(|d| resolved.starts_with(d))
    }
}

impl PathPolicy {
    /// The Ferric state directory `p` lies in, if any: a denied one, or a directory on its
    /// way that holds one of [`STATE_MARKERS`].
    pub fn state_dir_of(&self, p: &Path) -> Option<PathBuf> {
        let resolved = resolve(p);
        if let Some(d) = self.denied.iter().find(|d| resolved.starts_with(d)) {
            return Some(d.clone());
        }
        resolved
            .ancestors()
            .skip(1)
            .find(|dir| STATE_MARKERS.iter().any(|m| dir.join(m).exists()))
            .map(Path::to_path_buf)
    }
}

/// `p` with the longest existing prefix resolved through its symbolic links (a link inside
/// an allowed directory that points out of it counts as where it points).
fn resolve(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_proto::plan::GuestSpec;

    fn guest(serial: Option<&str>, kernel: Option<&str>) -> Step {
        let spec = GuestSpec {
            name: "g".into(),
            vcpus: 1,
            memory_mib: 64,
            volumes: vec![],
            nics: vec![],
            boot: kernel.map_or(GuestBoot::Disk, |k| GuestBoot::Kernel {
                kernel: k.into(),
                initrd: format!("{k}.img"),
                cmdline: String::new(),
            }),
            serial_log: serial.map(str::to_owned),
        };
        Step::EnsureGuest(spec)
    }

    #[test]
    fn paths_outside_the_allowed_directories_are_refused_with_the_field_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("logs");
        std::fs::create_dir(&allowed).unwrap();
        let policy = PathPolicy::new([allowed.clone()]);
        let inside = allowed.join("g.log");
        assert!(policy.check(&guest(inside.to_str(), None)).is_ok());
        // Not yet existing subdirectories are fine.
        let deeper = allowed.join("a/b/g.log");
        assert!(policy.check(&guest(deeper.to_str(), None)).is_ok());
        let (kind, why) = policy.check(&guest(Some("/etc/shadow"), None)).unwrap_err();
        assert_eq!(kind, ErrorKind::InvalidSpec);
        assert!(
            why.contains("serial_log `/etc/shadow`") && why.contains("--allow-path"),
            "{why}"
        );
        // Climbing out, or a link inside that points out, is refused too.
        let climb = format!("{}/../../etc/shadow", allowed.display());
        assert!(policy.check(&guest(Some(&climb), None)).is_err());
        std::os::unix::fs::symlink("/etc", allowed.join("etc")).unwrap();
        let linked = allowed.join("etc/shadow");
        assert!(policy.check(&guest(linked.to_str(), None)).is_err());
        // The kernel and initrd too.
        let (_, why) = policy
            .check(&guest(inside.to_str(), Some("/boot/vmlinuz")))
            .unwrap_err();
        assert!(why.contains("boot.kernel `/boot/vmlinuz`"), "{why}");
        // Steps that name no host path pass.
        assert!(
            policy
                .check(&Step::DeleteGuest { name: "g".into() })
                .is_ok()
        );
    }
}
