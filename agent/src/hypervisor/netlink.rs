//! Linux bridges through netlink. State is read from `/sys/class/net` (injected), changes go
//! through rtnetlink. Only bridges Ferric made (or the operator listed) are changed or
//! deleted, and an uplink that carries the host's own addresses or default route is not
//! enslaved unless the operator listed it ([`super::owned`]).

use crate::driver::{DriverError, DriverResult, Network};
use async_trait::async_trait;
use ferric_proto::plan::ErrorKind;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{LinkBridge, LinkUnspec, LinkVlan};
use std::path::{Path, PathBuf};

/// The netlink bridge driver.
#[derive(Debug, Clone)]
pub struct Netlink {
    sys_class_net: PathBuf,
    owned: super::owned::Owned,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> DriverError {
    DriverError::new(kind, msg)
}

impl Netlink {
    /// A driver reading link state from `sys_class_net` (normally `/sys/class/net`), changing
    /// only the bridges `owned` lets it.
    pub fn new(sys_class_net: impl Into<PathBuf>, owned: super::owned::Owned) -> Self {
        Self {
            sys_class_net: sys_class_net.into(),
            owned,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.sys_class_net.join(name)
    }

    fn exists(&self, name: &str) -> bool {
        self.dir(name).exists()
    }

    fn index(&self, name: &str) -> Result<u32, DriverError> {
        read_trim(&self.dir(name).join("ifindex"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("interface `{name}` does not exist on this host"),
                )
            })
    }

    fn is_up(&self, name: &str) -> bool {
        read_trim(&self.dir(name).join("flags"))
            .and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .is_some_and(|f| f & 1 == 1)
    }

    fn master(&self, name: &str) -> Option<String> {
        std::fs::read_link(self.dir(name).join("master"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    fn handle() -> Result<rtnetlink::Handle, DriverError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| err(ErrorKind::Io, format!("cannot open a netlink socket: {e}")))?;
        tokio::spawn(conn);
        Ok(handle)
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// One change to a network interface, as one rtnetlink request.
enum Change {
    /// Create an interface.
    Add(LinkMessage),
    /// Change an existing one.
    Set(LinkMessage),
    /// Remove the interface of this index.
    Delete(u32),
}

impl Change {
    /// Sends the request; a failure names `what` was being done.
    async fn send(self, handle: &rtnetlink::Handle, what: String) -> Result<(), DriverError> {
        let links = handle.link();
        let sent = match self {
            Change::Add(link) => links.add(link).execute().await,
            Change::Set(link) => links.set(link).execute().await,
            Change::Delete(index) => links.del(index).execute().await,
        };
        sent.map_err(|e| err(ErrorKind::Io, format!("{what}: {e}")))
    }
}

#[async_trait]
impl Network for Netlink {
    async fn ensure_bridge(
        &self,
        name: &str,
        uplink: Option<&str>,
        vlan: Option<u16>,
    ) -> DriverResult {
        if vlan.is_some() && uplink.is_none() {
            return Err(err(
                ErrorKind::InvalidSpec,
                format!("bridge `{name}`: field `vlan` needs an `uplink`"),
            ));
        }
        let handle = Self::handle()?;
        let mut changed = false;
        if self.exists(name) {
            if !self.dir(name).join("bridge").is_dir() {
                return Err(err(
                    ErrorKind::Conflict,
                    format!("interface `{name}` exists and is not a bridge"),
                ));
            }
            if !self.owned.has_bridge(name) {
                return Err(self.owned.foreign_bridge(name, "change"));
            }
        } else {
            self.owned.making_bridge(name)?;
            if let Err(e) = Change::Add(LinkBridge::new(name).build())
                .send(&handle, format!("create bridge `{name}`"))
                .await
            {
                self.owned.forget_bridge(name);
                return Err(e);
            }
            changed = true;
        }
        let br = self.index(name)?;
        if !self.is_up(name) {
            Change::Set(LinkUnspec::new_with_index(br).up().build())
                .send(&handle, format!("set bridge `{name}` up"))
                .await?;
            changed = true;
        }
        if let Some(uplink) = uplink {
            let up_idx = self.index(uplink)?;
            if !self.owned.uplink_listed(uplink) && self.master(uplink).as_deref() != Some(name) {
                if let Some(why) = super::owned::host_uplink(uplink) {
                    return Err(err(
                        ErrorKind::Conflict,
                        format!(
                            "uplink `{uplink}` of bridge `{name}`: {why}, so enslaving it would \
                             cut the host off; start the agent with `--uplink {uplink}` if that \
                             is meant"
                        ),
                    ));
                }
                if let Some(other) = self.master(uplink)
                    && !self.owned.has_bridge(&other)
                {
                    return Err(err(
                        ErrorKind::Conflict,
                        format!(
                            "uplink `{uplink}` is a port of bridge `{other}`, which is not \
                             Ferric's; it is not taken from it"
                        ),
                    ));
                }
            }
            let port = match vlan {
                Some(id) => {
                    let port = format!("{uplink}.{id}");
                    if port.len() > 15 {
                        return Err(err(
                            ErrorKind::InvalidSpec,
                            format!("VLAN interface name `{port}` is longer than 15 bytes"),
                        ));
                    }
                    // A VLAN interface comes up only on an uplink that is up.
                    if !self.is_up(uplink) {
                        Change::Set(LinkUnspec::new_with_index(up_idx).up().build())
                            .send(&handle, format!("set uplink `{uplink}` up"))
                            .await?;
                        changed = true;
                    }
                    if self.exists(&port) {
                        // The name says VLAN `id` on `uplink`; the kernel must agree.
                        let conf = std::fs::read_to_string(Path::new("/proc/net/vlan").join(&port))
                            .unwrap_or_default();
                        let vid = conf
                            .split("VID: ")
                            .nth(1)
                            .and_then(|r| r.split_whitespace().next());
                        let dev = conf
                            .split("Device: ")
                            .nth(1)
                            .and_then(|r| r.split_whitespace().next());
                        if vid != Some(&id.to_string()) || dev != Some(uplink) {
                            return Err(err(
                                ErrorKind::Conflict,
                                format!(
                                    "interface `{port}` exists and is not VLAN {id} on `{uplink}`"
                                ),
                            ));
                        }
                    } else {
                        Change::Add(LinkVlan::new(&port, up_idx, id).up().build())
                            .send(&handle, format!("create VLAN interface `{port}`"))
                            .await?;
                        changed = true;
                    }
                    port
                }
                None => uplink.to_owned(),
            };
            if self.master(&port).as_deref() != Some(name) || !self.is_up(&port) {
                let idx = self.index(&port)?;
                Change::Set(LinkUnspec::new_with_index(idx).controller(br).up().build())
                    .send(&handle, format!("enslave `{port}` to `{name}`"))
                    .await?;
                changed = true;
            }
        }
        Ok(changed)
    }

    async fn delete_bridge(&self, name: &str) -> DriverResult {
        if !self.exists(name) {
            self.owned.forget_bridge(name);
            return Ok(false);
        }
        if !self.dir(name).join("bridge").is_dir() {
            return Err(err(
                ErrorKind::Conflict,
                format!("interface `{name}` is not a bridge; not deleting it"),
            ));
        }
        if !self.owned.made_bridge(name) {
            return Err(self.owned.foreign_bridge(name, "delete"));
        }
        let handle = Self::handle()?;
        // VLAN sub-interfaces enslaved to the bridge were made for it: remove them too.
        if let Ok(ports) = std::fs::read_dir(self.dir(name).join("brif")) {
            for port in ports.flatten() {
                let port = port.file_name().to_string_lossy().into_owned();
                if Path::new("/proc/net/vlan").join(&port).exists() {
                    let idx = self.index(&port)?;
                    Change::Delete(idx)
                        .send(&handle, format!("delete VLAN interface `{port}`"))
                        .await?;
                }
            }
        }
        let idx = self.index(name)?;
        Change::Delete(idx)
            .send(&handle, format!("delete bridge `{name}`"))
            .await?;
        self.owned.forget_bridge(name);
        Ok(true)
    }
}
