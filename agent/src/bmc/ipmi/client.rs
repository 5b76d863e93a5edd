//! The IPMI-over-LAN client: one session per BMC, one operation in flight per BMC, and the
//! chassis, boot, device and SEL commands as async calls.

use super::commands::{
    BootSetting, ChassisStatus, DeviceId, Raw, SelInfo, parse_boot_flags, parse_device_id,
};
use super::session::{Conn, IpmiOptions, exchange, fail, session_key};
use crate::bmc::{BmcError, BmcErrorKind, BmcTarget};
use ferric_proto::plan::{BootDevice, PowerAction};
use ipmi_rs::connection::NetFn;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A BMC's session behind the lock that keeps one operation in flight.
type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

/// The client: sessions by BMC address, one operation at a time per BMC.
#[derive(Clone, Default)]
pub struct IpmiClient {
    opts: IpmiOptions,
    conns: Arc<Mutex<HashMap<String, Slot>>>,
}

impl std::fmt::Debug for IpmiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiClient")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl IpmiClient {
    /// A client with these options.
    pub fn new(opts: IpmiOptions) -> IpmiClient {
        IpmiClient {
            opts,
            conns: Arc::default(),
        }
    }

    /// Sends one command to the BMC and returns the answer's data.
    pub async fn raw(
        &self,
        t: &BmcTarget,
        netfn: NetFn,
        cmd: u8,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, BmcError> {
        self.send(t, Raw::new(netfn, cmd, data)).await
    }

    /// Sends one request to the BMC and returns the answer's data.
    pub async fn send(&self, t: &BmcTarget, request: Raw) -> Result<Vec<u8>, BmcError> {
        let slot = {
            let mut conns = crate::lock(&self.conns);
            conns.entry(session_key(t)).or_default().clone()
        };
        // One operation in flight per BMC.
        let mut guard = slot.lock().await;
        let conn = guard.take().unwrap_or_default();
        let (t2, opts) = (t.clone(), self.opts);
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let mut conn = conn;
            let r = exchange(&mut conn, &t2, &opts, request);
            (conn, r)
        })
        .await
        .map_err(|e| {
            fail(
                t,
                BmcErrorKind::Failed,
                format!("the IPMI task failed: {e}"),
            )
        })?;
        *guard = Some(conn);
        result
    }

    /// Closes every session with Close Session (BMCs hold only a handful per user), without
    /// retries: a BMC that does not answer times the session out itself.
    pub async fn close_all(&self) {
        let slots: Vec<_> = {
            let mut conns = crate::lock(&self.conns);
            conns.drain().map(|(_, v)| v).collect()
        };
        let mut closing = tokio::task::JoinSet::new();
        for s in slots {
            let Some(mut conn) = s.lock().await.take() else {
                continue;
            };
            closing.spawn_blocking(move || {
                if let Some(session) = conn.session.take() {
                    session.close();
                }
            });
        }
        while closing.join_next().await.is_some() {}
    }

    /// Chassis power and faults.
    pub async fn chassis_status(&self, t: &BmcTarget) -> Result<ChassisStatus, BmcError> {
        let d = self.raw(t, NetFn::Chassis, 0x01, vec![]).await?;
        let b = *d
            .first()
            .ok_or_else(|| fail(t, BmcErrorKind::Failed, "empty chassis status"))?;
        Ok(ChassisStatus {
            power_on: b & 0x01 != 0,
            fault: b & 0x0e != 0,
        })
    }

    /// Power on, off, cycle, reset or soft (ACPI) off.
    pub async fn power(&self, t: &BmcTarget, action: PowerAction) -> Result<(), BmcError> {
        let code = match action {
            PowerAction::Off => 0x00,
            PowerAction::On => 0x01,
            PowerAction::Cycle => 0x02,
            PowerAction::Reset => 0x03,
            PowerAction::Soft => 0x05,
            PowerAction::Status => return Ok(()),
        };
        self.raw(t, NetFn::Chassis, 0x02, vec![code]).await?;
        Ok(())
    }

    /// The next boot device (once or persistent, legacy or UEFI).
    pub async fn set_boot_device(
        &self,
        t: &BmcTarget,
        device: BootDevice,
        persistent: bool,
        uefi: bool,
    ) -> Result<(), BmcError> {
        let raw = Raw::set_boot_flags(device, persistent, uefi).ok_or_else(|| {
            fail(
                t,
                BmcErrorKind::Unsupported,
                format!("IPMI has no boot device {}", device.as_str()),
            )
        })?;
        self.send(t, raw).await?;
        Ok(())
    }

    /// The boot flags as stored by the BMC.
    pub async fn boot_device(&self, t: &BmcTarget) -> Result<BootSetting, BmcError> {
        let d = self.send(t, Raw::get_boot_flags()).await?;
        parse_boot_flags(&d)
            .ok_or_else(|| fail(t, BmcErrorKind::Failed, "short boot options answer"))
    }

    /// Get Device ID.
    pub async fn device_id(&self, t: &BmcTarget) -> Result<DeviceId, BmcError> {
        let d = self.send(t, Raw::get_device_id()).await?;
        parse_device_id(&d).ok_or_else(|| fail(t, BmcErrorKind::Failed, "short device id answer"))
    }

    /// Get SEL Info.
    pub async fn sel_info(&self, t: &BmcTarget) -> Result<SelInfo, BmcError> {
        let d = self.raw(t, NetFn::Storage, 0x40, vec![]).await?;
        if d.len() < 5 {
            return Err(fail(t, BmcErrorKind::Failed, "short SEL info answer"));
        }
        Ok(SelInfo {
            entries: u16::from_le_bytes([d[1], d[2]]),
            free_bytes: u16::from_le_bytes([d[3], d[4]]),
        })
    }

    /// Reads every SEL entry (16 bytes each, as stored), following the log's record chain to
    /// its end; a chain that loops back is an error, not a shorter log.
    pub async fn sel_entries(&self, t: &BmcTarget) -> Result<Vec<[u8; 16]>, BmcError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut id = 0u16;
        loop {
            let [lo, hi] = id.to_le_bytes();
            let d = match self
                .raw(t, NetFn::Storage, 0x43, vec![0, 0, lo, hi, 0, 0xff])
                .await
            {
                Ok(d) => d,
                // An empty log answers "not present" (0xCB) for the first record; any other
                // refusal (busy, erase in progress) is an error, not an empty log.
                Err(e) if id == 0 && e.kind == BmcErrorKind::NotPresent => return Ok(out),
                Err(e) => return Err(e),
            };
            if d.len() < 18 {
                return Err(fail(t, BmcErrorKind::Failed, "short SEL entry"));
            }
            let mut rec = [0u8; 16];
            rec.copy_from_slice(&d[2..18]);
            out.push(rec);
            let next = u16::from_le_bytes([d[0], d[1]]);
            if next == 0xffff {
                return Ok(out);
            }
            if !seen.insert(id) || next == 0 || seen.contains(&next) {
                return Err(fail(
                    t,
                    BmcErrorKind::Failed,
                    format!("the event log's record chain loops back (record {id} → {next})"),
                ));
            }
            id = next;
        }
    }

    /// Clears the SEL (reserve, then clear).
    pub async fn sel_clear(&self, t: &BmcTarget) -> Result<(), BmcError> {
        let r = self.raw(t, NetFn::Storage, 0x42, vec![]).await?;
        if r.len() < 2 {
            return Err(fail(t, BmcErrorKind::Failed, "short SEL reservation"));
        }
        self.raw(
            t,
            NetFn::Storage,
            0x47,
            vec![r[0], r[1], b'C', b'L', b'R', 0xaa],
        )
        .await?;
        Ok(())
    }
}
