//! What the iPXE script (or the virtual-media ISO's boot loader) put on the kernel command line
//! for the ramdisk: where the coordinator is, the CA fingerprint to pin, the per-boot token,
//! the node and its boot NIC, and for a network without DHCP the static address.

use std::net::Ipv4Addr;

/// A static address for the boot NIC (`ferric.ip=ADDR/PREFIX`, `ferric.gw=ADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticNet {
    /// Address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
}

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
    /// The static address to use instead of DHCP, when given.
    pub static_net: Option<StaticNet>,
}

/// Why the command line does not make a ramdisk boot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissingArg {
    /// A word the boot needs is not there.
    #[error("the kernel command line lacks `{0}=` (it is set by the coordinator's boot script)")]
    Missing(&'static str),
    /// A word is there with a value that does not parse.
    #[error("the kernel command line's `{key}={value}` is not {want}")]
    Bad {
        /// The word.
        key: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        want: &'static str,
    },
}

impl BootArgs {
    /// Reads the `ferric.*` words of a kernel command line.
    pub fn parse(cmdline: &str) -> Result<BootArgs, MissingArg> {
        let get = |key: &'static str| {
            cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned)
        };
        let need = |key: &'static str| get(key).ok_or(MissingArg::Missing(key));
        let static_net = match get("ferric.ip") {
            None => None,
            Some(v) => {
                let bad = |key, value: &str, want| MissingArg::Bad {
                    key,
                    value: value.to_owned(),
                    want,
                };
                let (ip, prefix) = v
                    .split_once('/')
                    .and_then(|(a, p)| Some((a.parse().ok()?, p.parse().ok()?)))
                    .filter(|(_, p): &(Ipv4Addr, u8)| (1..=32).contains(p))
                    .ok_or_else(|| bad("ferric.ip", &v, "an IPv4 address/prefix"))?;
                let gateway = match get("ferric.gw") {
                    None => None,
                    Some(g) => Some(
                        g.parse()
                            .map_err(|_| bad("ferric.gw", &g, "an IPv4 address"))?,
                    ),
                };
                Some(StaticNet {
                    ip,
                    prefix,
                    gateway,
                })
            }
        };
        Ok(BootArgs {
            coordinator: need("ferric.coordinator")?,
            ca: need("ferric.ca")?,
            token: need("ferric.token")?,
            node: need("ferric.node")?,
            mac: get("ferric.mac"),
            static_net,
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
        assert_eq!(a.static_net, None);
        assert_eq!(
            BootArgs::parse("ferric.coordinator=x ferric.ca=y ferric.node=n"),
            Err(MissingArg::Missing("ferric.token"))
        );
    }

    #[test]
    fn a_static_address_replaces_dhcp_and_a_bad_one_is_named() {
        let base = "ferric.coordinator=10.248.1.1:7443 ferric.ca=sha256:ab ferric.token=b1.s \
                    ferric.node=n0";
        let a = BootArgs::parse(&format!(
            "{base} ferric.ip=10.248.1.200/24 ferric.gw=10.248.1.1"
        ))
        .unwrap();
        assert_eq!(
            a.static_net,
            Some(StaticNet {
                ip: "10.248.1.200".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.248.1.1".parse().unwrap()),
            })
        );
        for bad in [
            "ferric.ip=10.248.1.200",
            "ferric.ip=10.248.1.200/33",
            "ferric.ip=x/24",
        ] {
            let e = BootArgs::parse(&format!("{base} {bad}")).unwrap_err();
            assert!(
                matches!(
                    e,
                    MissingArg::Bad {
                        key: "ferric.ip",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        let e =
            BootArgs::parse(&format!("{base} ferric.ip=10.0.0.2/8 ferric.gw=nope")).unwrap_err();
        assert!(e.to_string().contains("ferric.gw=nope"), "{e}");
    }
}
