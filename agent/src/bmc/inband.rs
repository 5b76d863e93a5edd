//! In-band IPMI through the kernel's IPMI device (`/dev/ipmi0`, from `ipmi_si` and
//! `ipmi_devintf`), for the deploy ramdisk on a bare-metal node: the BMC's identity and LAN
//! settings (for inspection: the address an operator enrolls), and the next boot device. No
//! session and no password: the kernel interface is the machine's own.

use super::ipmi::{BootSetting, DeviceId, Raw, completion, parse_boot_flags, parse_device_id};
use super::{BmcError, BmcErrorKind};
use ferric_proto::plan::BootDevice;
use ipmi_rs::connection::NetFn;
use ipmi_rs::{Ipmi, IpmiError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The BMC's LAN channel as it reports itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LanSettings {
    /// Channel number.
    pub channel: u8,
    /// IPv4 address.
    pub ip: String,
    /// `static`, `dhcp`, `bios`, `other` or `unspecified`.
    pub ip_source: String,
    /// Netmask.
    pub netmask: String,
    /// Default gateway.
    pub gateway: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// The kernel's IPMI device.
pub struct Inband {
    ipmi: Ipmi<ipmi_rs::File>,
    path: PathBuf,
}

impl std::fmt::Debug for Inband {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inband").field("path", &self.path).finish()
    }
}

fn ipv4(b: &[u8]) -> String {
    b.iter()
        .take(4)
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

impl Inband {
    /// Opens the device (`/dev/ipmi0` on most machines).
    pub fn open(path: &Path) -> Result<Inband, BmcError> {
        let file = ipmi_rs::File::new(path, Duration::from_secs(5)).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                BmcErrorKind::Unsupported
            } else {
                BmcErrorKind::Unreachable
            };
            BmcError {
                kind,
                bmc: path.display().to_string(),
                message: format!(
                    "cannot open the IPMI device: {e} (are ipmi_si and ipmi_devintf loaded?)"
                ),
            }
        })?;
        Ok(Inband {
            ipmi: Ipmi::new(file),
            path: path.to_owned(),
        })
    }

    fn fail(&self, kind: BmcErrorKind, message: impl Into<String>) -> BmcError {
        BmcError {
            kind,
            bmc: self.path.display().to_string(),
            message: message.into(),
        }
    }

    /// One command; the answer's data.
    pub fn raw(&mut self, netfn: NetFn, cmd: u8, data: Vec<u8>) -> Result<Vec<u8>, BmcError> {
        self.send(Raw::new(netfn, cmd, data))
    }

    /// One request; the answer's data.
    pub fn send(&mut self, request: Raw) -> Result<Vec<u8>, BmcError> {
        match self.ipmi.send_recv(request) {
            Ok(d) => Ok(d),
            Err(IpmiError::Failed {
                completion_code, ..
            }) => {
                let (kind, msg) = completion(completion_code);
                Err(self.fail(kind, msg))
            }
            Err(e) => Err(self.fail(
                BmcErrorKind::Unreachable,
                format!("no answer through the kernel interface: {e:?}"),
            )),
        }
    }

    /// Get Device ID.
    pub fn device_id(&mut self) -> Result<DeviceId, BmcError> {
        let d = self.send(Raw::get_device_id())?;
        parse_device_id(&d).ok_or_else(|| self.fail(BmcErrorKind::Failed, "short device id"))
    }

    /// The first LAN channel (by Get Channel Info, medium 802.3) and its settings.
    pub fn lan(&mut self) -> Result<LanSettings, BmcError> {
        let channel = (1..=11u8)
            .find(|&c| {
                self.raw(NetFn::App, 0x42, vec![c])
                    .is_ok_and(|d| d.get(1).is_some_and(|m| m & 0x7f == 0x04))
            })
            .ok_or_else(|| self.fail(BmcErrorKind::Unsupported, "the BMC has no LAN channel"))?;
        let mut param = |p: u8, len: usize| -> Result<Vec<u8>, BmcError> {
            // Get LAN Configuration Parameters: answer = revision, then the data.
            let d = self.raw(NetFn::Transport, 0x02, vec![channel, p, 0, 0])?;
            if d.len() < 1 + len {
                return Err(self.fail(
                    BmcErrorKind::Failed,
                    format!("short LAN parameter {p} on channel {channel}"),
                ));
            }
            Ok(d[1..=len].to_vec())
        };
        let ip = ipv4(&param(3, 4)?);
        let ip_source = match param(4, 1)?[0] & 0x0f {
            1 => "static",
            2 => "dhcp",
            3 => "bios",
            4 => "other",
            _ => "unspecified",
        }
        .to_owned();
        let mac = param(5, 6)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let netmask = ipv4(&param(6, 4)?);
        let gateway = ipv4(&param(12, 4)?);
        Ok(LanSettings {
            channel,
            ip,
            ip_source,
            netmask,
            gateway,
            mac,
        })
    }

    /// The next boot device as the BMC stores it.
    pub fn boot_device(&mut self) -> Result<BootSetting, BmcError> {
        let d = self.send(Raw::get_boot_flags())?;
        parse_boot_flags(&d).ok_or_else(|| self.fail(BmcErrorKind::Failed, "short boot options"))
    }

    /// Sets the next boot device.
    pub fn set_boot_device(
        &mut self,
        device: BootDevice,
        persistent: bool,
        uefi: bool,
    ) -> Result<(), BmcError> {
        let raw = Raw::set_boot_flags(device, persistent, uefi).ok_or_else(|| {
            self.fail(
                BmcErrorKind::Unsupported,
                format!("IPMI has no boot device {}", device.as_str()),
            )
        })?;
        self.send(raw)?;
        Ok(())
    }
}
