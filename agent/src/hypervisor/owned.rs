//! Which host objects plans may touch: the bridges and volumes Ferric made (recorded in the
//! agent's state directory when it makes them, forgotten when it deletes them) and those the
//! operator lists when starting the agent (`--bridge`, `--volume`, `--uplink`). A bridge the
//! host had — its own uplink bridge — or a logical volume of the host's volume group is
//! refused with that reason: a plan is a member's to write, the host is the operator's.

use crate::driver::DriverError;
use ferric_proto::plan::ErrorKind;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The objects plans may touch on this host.
#[derive(Debug, Clone)]
pub struct Owned {
    dir: PathBuf,
    bridges: BTreeSet<String>,
    volumes: BTreeSet<String>,
    uplinks: BTreeSet<String>,
}

/// A record's file name: the object's name in hex (names may hold `.` and `:`, and `..` is a
/// name a plan may give).
fn file_name(name: &str) -> String {
    hex::encode(name.as_bytes())
}

impl Owned {
    /// Records under `state_dir/owned`; `bridges`, `volumes` (`POOL/NAME`) and `uplinks` the
    /// operator lets plans use although Ferric did not make them.
    pub fn new(
        state_dir: &Path,
        bridges: impl IntoIterator<Item = String>,
        volumes: impl IntoIterator<Item = String>,
        uplinks: impl IntoIterator<Item = String>,
    ) -> Owned {
        Owned {
            dir: state_dir.join("owned"),
            bridges: bridges.into_iter().collect(),
            volumes: volumes.into_iter().collect(),
            uplinks: uplinks.into_iter().collect(),
        }
    }

    fn bridge_record(&self, name: &str) -> PathBuf {
        self.dir.join("bridges").join(file_name(name))
    }

    fn volume_record(&self, pool: &str, name: &str) -> PathBuf {
        self.dir
            .join("volumes")
            .join(file_name(pool))
            .join(file_name(name))
    }

    fn write(path: &Path, what: &str) -> Result<(), DriverError> {
        let io = |e: std::io::Error| {
            DriverError::new(
                ErrorKind::Io,
                format!(
                    "cannot record {what} as Ferric's in {}: {e}",
                    path.display()
                ),
            )
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(path, b"").map_err(io)
    }

    /// Whether plans may use bridge `name`: Ferric made it, or the operator listed it.
    pub fn has_bridge(&self, name: &str) -> bool {
        self.bridges.contains(name) || self.bridge_record(name).exists()
    }

    /// Whether Ferric made bridge `name` (only such a bridge is deleted; one the operator
    /// listed is used, not deleted).
    pub fn made_bridge(&self, name: &str) -> bool {
        self.bridge_record(name).exists()
    }

    /// Records that Ferric is about to make bridge `name` (before it does: a crash in between
    /// leaves a record of a bridge that does not exist, which the next plan makes).
    pub fn making_bridge(&self, name: &str) -> Result<(), DriverError> {
        Self::write(&self.bridge_record(name), &format!("bridge `{name}`"))
    }

    /// Forgets bridge `name` (deleted).
    pub fn forget_bridge(&self, name: &str) {
        let _ = std::fs::remove_file(self.bridge_record(name));
    }

    /// Whether the operator lists `iface` as an uplink plans may enslave although it holds
    /// the host's addresses or routes.
    pub fn uplink_listed(&self, iface: &str) -> bool {
        self.uplinks.contains(iface)
    }

    /// Whether plans may use volume `pool/name`: Ferric made it, or the operator listed it.
    pub fn has_volume(&self, pool: &str, name: &str) -> bool {
        self.volumes.contains(&format!("{pool}/{name}")) || self.volume_record(pool, name).exists()
    }

    /// Whether Ferric made volume `pool/name` (only such a volume is deleted).
    pub fn made_volume(&self, pool: &str, name: &str) -> bool {
        self.volume_record(pool, name).exists()
    }

    /// Records that Ferric is about to make volume `pool/name`.
    pub fn making_volume(&self, pool: &str, name: &str) -> Result<(), DriverError> {
        Self::write(
            &self.volume_record(pool, name),
            &format!("volume `{pool}/{name}`"),
        )
    }

    /// Forgets volume `pool/name` (deleted).
    pub fn forget_volume(&self, pool: &str, name: &str) {
        let _ = std::fs::remove_file(self.volume_record(pool, name));
    }

    /// The refusal of a bridge that exists and is not Ferric's.
    pub fn foreign_bridge(&self, name: &str, doing: &str) -> DriverError {
        DriverError::new(
            ErrorKind::Conflict,
            format!(
                "bridge `{name}` exists and was not made by Ferric: plans do not {doing} a \
                 bridge of the host's (start the agent with `--bridge {name}` to let them)"
            ),
        )
    }

    /// The refusal of a volume that exists and is not Ferric's.
    pub fn foreign_volume(&self, pool: &str, name: &str, doing: &str) -> DriverError {
        DriverError::new(
            ErrorKind::Conflict,
            format!(
                "volume `{pool}/{name}` exists and was not made by Ferric: plans do not {doing} \
                 a volume of the host's (start the agent with `--volume {pool}/{name}` to let them)"
            ),
        )
    }
}

/// Why enslaving `iface` to a bridge would cut the host off, if it would: it holds an address
/// of the host's, or the default route goes through it.
pub fn host_uplink(iface: &str) -> Option<String> {
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs.filter(|a| a.interface_name == iface) {
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                return Some(format!("it holds the host's address {}", v4.ip()));
            }
            if let Some(v6) = addr.as_sockaddr_in6()
                && !v6.ip().is_unicast_link_local()
            {
                return Some(format!("it holds the host's address {}", v6.ip()));
            }
        }
    }
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let default = routes.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[0] == iface && f[1] == "00000000"
    });
    default.then(|| "the host's default route goes through it".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_and_listed_objects_are_ferrics_and_forgotten_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let o = Owned::new(
            dir.path(),
            ["br-host".to_owned()],
            ["pool/keep".to_owned()],
            ["eth9".to_owned()],
        );
        assert!(o.has_bridge("br-host") && !o.has_bridge("br0"));
        o.making_bridge("br0").unwrap();
        assert!(o.has_bridge("br0"));
        o.forget_bridge("br0");
        assert!(!o.has_bridge("br0"));
        assert!(o.has_volume("pool", "keep") && !o.has_volume("pool", ".."));
        o.making_volume("pool", "..").unwrap();
        assert!(
            o.has_volume("pool", ".."),
            "recorded by name, not walked as a path"
        );
        assert!(!dir.path().join("owned/volumes").join("..").is_file());
        o.forget_volume("pool", "..");
        assert!(!o.has_volume("pool", ".."));
        assert!(o.uplink_listed("eth9") && !o.uplink_listed("eth0"));
        let why = o.foreign_bridge("br0", "delete").message;
        assert!(why.contains("--bridge br0"), "{why}");
    }

    #[test]
    fn the_loopback_holds_the_hosts_address() {
        assert!(host_uplink("lo").is_some_and(|w| w.contains("127.0.0.1")));
        assert!(host_uplink("no-such-if0").is_none());
    }
}
