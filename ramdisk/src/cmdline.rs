//! What the iPXE script put on the kernel command line for the ramdisk: where the coordinator
//! is, the CA fingerprint to pin, the per-boot token, the node and its boot NIC.

/// The ramdisk's settings from `/proc/cmdline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// The coordinator's link, `IP:PORT` (`ferric.coordinator=`).
    pub coordinator: String,
    /// `sha256:HEX` of the CA (`ferric.ca=`).
    pub ca: String,
    /// Per-boot token `ID.SECRET` (`ferric.token=`).
    pub token: String,
    /// The node (`ferric.node=`).
    pub node: String,
    /// MAC of the NIC it booted from (`ferric.mac=`), when given.
    pub mac: Option<String>,
}

/// Why the command line does not make a ramdisk boot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kernel command line lacks `{0}=` (it is set by the coordinator's boot script)")]
pub struct MissingArg(pub &'static str);

impl BootArgs {
    /// Reads the `ferric.*` words of a kernel command line.
    pub fn parse(cmdline: &str) -> Result<BootArgs, MissingArg> {
        let get = |key: &'static str| {
            cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned)
        };
        let need = |key: &'static str| get(key).ok_or(MissingArg(key));
        Ok(BootArgs {
            coordinator: need("ferric.coordinator")?,
            ca: need("ferric.ca")?,
            token: need("ferric.token")?,
            node: need("ferric.node")?,
            mac: get("ferric.mac"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ferric_words_are_read_and_a_missing_one_is_named() {
        let a = BootArgs::parse(
            "BOOT_IMAGE=vmlinuz ferric.coordinator=10.248.1.1:7443 ferric.ca=sha256:ab \
             ferric.token=b1.s ferric.node=rack1-n0 ferric.mac=52:54:00:00:00:01 console=ttyS0",
        )
        .unwrap();
        assert_eq!(a.coordinator, "10.248.1.1:7443");
        assert_eq!(a.node, "rack1-n0");
        assert_eq!(a.mac.as_deref(), Some("52:54:00:00:00:01"));
        assert_eq!(
            BootArgs::parse("ferric.coordinator=x ferric.ca=y ferric.node=n"),
            Err(MissingArg("ferric.token"))
        );
    }
}
