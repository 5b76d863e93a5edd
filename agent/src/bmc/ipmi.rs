//! The IPMI-over-LAN client: sessions per BMC, retries, and the chassis, boot, device and SEL
//! commands Ferric needs (built on `ipmi-rs`' RMCP+ session with Ferric's own command
//! encodings, from the IPMI 2.0 specification).

use super::{BmcError, BmcErrorKind, BmcTarget};
use ferric_proto::plan::{BootDevice, PowerAction};
use ipmi_rs::connection::{CompletionErrorCode, IpmiCommand, Message, NetFn};
use ipmi_rs::rmcp::{ActivationError, Rmcp, V2_0ActivationError};
use ipmi_rs::{Ipmi, IpmiError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How hard the client tries.
#[derive(Debug, Clone, Copy)]
pub struct IpmiOptions {
    /// Wait for one answer before sending again.
    pub exchange_timeout: Duration,
    /// Give up on an operation after this long.
    pub deadline: Duration,
    /// Least time between two operations on one BMC (BMCs are small computers).
    pub min_interval: Duration,
}

impl Default for IpmiOptions {
    fn default() -> Self {
        IpmiOptions {
            exchange_timeout: Duration::from_millis(400),
            deadline: Duration::from_secs(30),
            min_interval: Duration::from_millis(10),
        }
    }
}

/// A raw IPMI request: netfn, command, data; the answer's data (after the completion code).
pub(crate) struct Raw {
    netfn: NetFn,
    cmd: u8,
    data: Vec<u8>,
}

impl Raw {
    /// A request.
    pub(crate) fn new(netfn: NetFn, cmd: u8, data: Vec<u8>) -> Raw {
        Raw { netfn, cmd, data }
    }
}

impl From<Raw> for Message {
    fn from(r: Raw) -> Message {
        Message::new_request(r.netfn, r.cmd, r.data)
    }
}

impl IpmiCommand for Raw {
    type Output = Vec<u8>;
    type Error = std::convert::Infallible;

    fn parse_success_response(data: &[u8]) -> Result<Vec<u8>, Self::Error> {
        Ok(data.to_vec())
    }
}

/// One BMC's session, and the relay under it.
struct Conn {
    ipmi: Option<Ipmi<Rmcp>>,
    relay: Option<super::relay::Relay>,
    last: Option<Instant>,
}

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

/// What Get Device ID says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceId {
    /// Device id.
    pub device_id: u8,
    /// Device revision.
    pub revision: u8,
    /// Firmware `major.minor`.
    pub firmware: String,
    /// IPMI version, `2.0`.
    pub ipmi_version: String,
    /// IANA manufacturer id.
    pub manufacturer: u32,
    /// Product id.
    pub product: u16,
}

/// What Get Chassis Status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ChassisStatus {
    /// System power is on.
    pub power_on: bool,
    /// A power overload or fault.
    pub fault: bool,
}

/// The next boot device as the BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BootSetting {
    /// Device selected (None: no override).
    pub device: Option<BootDevice>,
    /// For all future boots.
    pub persistent: bool,
    /// UEFI.
    pub uefi: bool,
}

/// What Get SEL Info says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SelInfo {
    /// Entries in the log.
    pub entries: u16,
    /// Free bytes.
    pub free_bytes: u16,
}

/// Decodes a System Event Log entry as the BMC stored it (16 bytes, untrusted): record
/// types, sensor types and event codes through ipmi-rs's tables; what they do not know is
/// named by its codes, never refused.
pub fn decode_sel(raw: &[u8; 16]) -> ferric_proto::plan::SelEntry {
    use ipmi_rs::storage::sdr::SensorType;
    use ipmi_rs::storage::sel::{Entry, EventDirection};
    struct Describe<'a>(&'a Entry);
    impl std::fmt::Display for Describe<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.event_description(f)
        }
    }
    let id = u16::from_le_bytes([raw[0], raw[1]]);
    let ts = u32::from_le_bytes([raw[3], raw[4], raw[5], raw[6]]);
    // Times up to 0x20000000 count from the BMC's initialisation, not from 1970.
    // 0xFFFFFFFF is "unspecified".
    let at_s = (ts > 0x2000_0000 && ts != u32::MAX).then_some(ts);
    let mut e = ferric_proto::plan::SelEntry {
        id,
        at_s: None,
        sensor: String::new(),
        sensor_number: 0,
        event: String::new(),
        asserted: true,
        raw: raw.iter().map(|b| format!("{b:02x}")).collect(),
    };
    match Entry::parse(raw) {
        Ok(
            ref entry @ Entry::System {
                sensor_type,
                sensor_number,
                event_direction,
                event_type,
                ref event_data,
                ..
            },
        ) => {
            let desc = Describe(entry).to_string();
            e.at_s = at_s;
            e.sensor = SensorType::from(sensor_type).to_string();
            e.sensor_number = sensor_number;
            e.event = if desc.is_empty() {
                format!("event type 0x{event_type:02x} offset {}", event_data.offset)
            } else {
                desc
            };
            e.asserted = event_direction == EventDirection::Assert;
        }
        Ok(Entry::OemTimestamped {
            ty,
            manufacturer_id,
            ..
        }) => {
            e.at_s = at_s;
            e.sensor = format!("OEM record 0x{ty:02x}");
            e.event = format!("OEM data (manufacturer {manufacturer_id})");
        }
        Ok(Entry::OemNotTimestamped { ty, .. }) => {
            e.sensor = format!("OEM record 0x{ty:02x}");
            e.event = "OEM data".into();
        }
        Err(err) => {
            e.sensor = format!("record type 0x{:02x}", raw[2]);
            e.event = format!("not decoded ({err:?})");
        }
    }
    e
}

/// Set System Boot Options, parameter 5 (boot flags): valid, persistent, UEFI, device.
pub fn boot_flags_request(device: BootDevice, persistent: bool, uefi: bool) -> Vec<u8> {
    let mut b1 = 0x80; // valid
    if persistent {
        b1 |= 0x40;
    }
    if uefi {
        b1 |= 0x20;
    }
    let selector = match device {
        BootDevice::Pxe => 0x1,
        BootDevice::Disk => 0x2,
        BootDevice::Cdrom => 0x5,
        BootDevice::Bios => 0x6,
    };
    vec![0x05, b1, selector << 2, 0, 0, 0]
}

/// The answer to Get System Boot Options, parameter 5.
pub fn parse_boot_flags(d: &[u8]) -> Option<BootSetting> {
    let (b1, b2) = (*d.get(2)?, *d.get(3)?);
    let device = match (b2 >> 2) & 0x0f {
        0x1 => Some(BootDevice::Pxe),
        0x2 => Some(BootDevice::Disk),
        0x5 => Some(BootDevice::Cdrom),
        0x6 => Some(BootDevice::Bios),
        _ => None,
    };
    Some(BootSetting {
        device,
        persistent: b1 & 0x40 != 0,
        uefi: b1 & 0x20 != 0,
    })
}

/// The answer to Get Device ID.
pub fn parse_device_id(d: &[u8]) -> Option<DeviceId> {
    if d.len() < 11 {
        return None;
    }
    Some(DeviceId {
        device_id: d[0],
        revision: d[1] & 0x0f,
        firmware: format!("{}.{:02x}", d[2] & 0x7f, d[3]),
        ipmi_version: format!("{}.{}", d[4] & 0x0f, d[4] >> 4),
        manufacturer: u32::from_le_bytes([d[6], d[7], d[8], 0]),
        product: u16::from_le_bytes([d[9], d[10]]),
    })
}

fn fail(t: &BmcTarget, kind: BmcErrorKind, message: impl Into<String>) -> BmcError {
    BmcError {
        kind,
        bmc: t.addr(),
        message: message.into(),
    }
}

/// Whether an activation failure means the credentials were refused.
fn auth_refused(e: &ActivationError) -> bool {
    matches!(
        e,
        ActivationError::V2_0(
            V2_0ActivationError::RakpMessage2Parse(_)
                | V2_0ActivationError::RakpMessage2Validate(_)
                | V2_0ActivationError::RakpMessage4Parse(_)
                | V2_0ActivationError::RakpMessage4Validate(_)
                | V2_0ActivationError::RakpMessage4InvalidIntegrityCheckValue
                | V2_0ActivationError::ServerAuthenticationFailed
        )
    )
}

/// Maps a completion code to an error kind and message.
pub(crate) fn completion(cc: CompletionErrorCode) -> (BmcErrorKind, String) {
    match cc {
        CompletionErrorCode::InsufficientPrivilege => (
            BmcErrorKind::InsufficientPrivilege,
            "the user's privilege level does not allow this command".into(),
        ),
        CompletionErrorCode::InvalidCommand | CompletionErrorCode::InvalidCommandForLun => (
            BmcErrorKind::Unsupported,
            "the BMC does not support this command".into(),
        ),
        CompletionErrorCode::ParameterOutOfRange
        | CompletionErrorCode::InvalidDataFieldInRequest => (
            BmcErrorKind::Unsupported,
            format!("the BMC does not support this setting ({cc:?})"),
        ),
        CompletionErrorCode::RequestedDatapointNotPresent => (
            BmcErrorKind::NotPresent,
            "the requested record is not present".into(),
        ),
        other => (
            BmcErrorKind::Failed,
            format!("the BMC answered with completion code {other:?}"),
        ),
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
        let slot = {
            let mut conns = crate::lock(&self.conns);
            conns.entry(session_key(t)).or_default().clone()
        };
        // One operation in flight per BMC.
        let mut guard = slot.lock().await;
        let conn = guard.take().unwrap_or(Conn {
            ipmi: None,
            relay: None,
            last: None,
        });
        let (t2, opts) = (t.clone(), self.opts);
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let mut conn = conn;
            let r = exchange(&mut conn, &t2, &opts, netfn, cmd, data);
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
                let id = conn.relay.as_ref().map_or(0, |r| {
                    r.session_id.load(std::sync::atomic::Ordering::Relaxed)
                });
                if let Some(ipmi) = conn.ipmi.as_mut()
                    && id != 0
                {
                    let _ = super::contained(|| {
                        ipmi.send_recv(Raw::new(NetFn::App, 0x3c, id.to_le_bytes().to_vec()))
                    });
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
        self.raw(
            t,
            NetFn::Chassis,
            0x08,
            boot_flags_request(device, persistent, uefi),
        )
        .await?;
        Ok(())
    }

    /// The boot flags as stored by the BMC.
    pub async fn boot_device(&self, t: &BmcTarget) -> Result<BootSetting, BmcError> {
        let d = self
            .raw(t, NetFn::Chassis, 0x09, vec![0x05, 0x00, 0x00])
            .await?;
        parse_boot_flags(&d)
            .ok_or_else(|| fail(t, BmcErrorKind::Failed, "short boot options answer"))
    }

    /// Get Device ID.
    pub async fn device_id(&self, t: &BmcTarget) -> Result<DeviceId, BmcError> {
        let d = self.raw(t, NetFn::App, 0x01, vec![]).await?;
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

/// A sensor found in the BMC's SDR repository, with what is needed to read and convert it.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorDef {
    /// Sensor number.
    pub number: u8,
    /// Name from the record's ID string.
    pub name: String,
    /// Sensor type (`temperature`, `fan`, …).
    pub kind: String,
    /// Unit (`°C`, `RPM`, …), empty when unspecified.
    pub unit: String,
    /// Linear conversion of a raw reading, for analog (full record) sensors.
    pub conversion: Option<Conversion>,
}

/// `y = (M·x + B·10^Bexp)·10^Rexp` (IPMI 2.0, 36.3), for linear sensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    m: f64,
    b: f64,
    b_exp: i32,
    r_exp: i32,
    signed: Option<bool>,
}

impl Conversion {
    /// The reading a raw byte stands for.
    pub fn apply(&self, raw: u8) -> f64 {
        let x = match self.signed {
            Some(true) => f64::from(raw as i8),
            Some(false) => f64::from(!raw as i8),
            None => f64::from(raw),
        };
        (self.m * x + self.b * 10f64.powi(self.b_exp)) * 10f64.powi(self.r_exp)
    }
}

/// Parses one SDR (header and body, as Get SDR returns them) into a sensor Ferric can read:
/// full and compact sensor records owned by the BMC; other records give `Ok(None)`. The bytes
/// come from the network: a record the parser cannot take is an error, never a panic.
pub fn parse_sdr(record: &[u8]) -> Result<Option<SensorDef>, String> {
    use ipmi_rs::storage::sdr::record::{
        DataFormat, Linearization, Record, WithSensorRecordCommon,
    };
    // ipmi-rs 0.6 indexes past the end of short sensor records: refuse those first (the fixed
    // parts are 43 and 27 bytes, IPMI 2.0 tables 43-1 and 43-2), and contain any other panic.
    // Only sensor records are parsed (other kinds are not needed, and ipmi-rs panics on
    // some of them).
    let min_body = match record.get(3) {
        Some(0x01) => 43,
        Some(0x02) => 27,
        _ => return Ok(None),
    };
    if record.len() < 5 + min_body {
        return Err(format!("SDR of {} bytes is too short", record.len()));
    }
    // Compact records: ID-string modifier types 10b and 11b are reserved (and make ipmi-rs
    // panic).
    if record.get(3) == Some(&0x02) && record[5 + 18] & 0x20 != 0 {
        return Err("compact SDR with a reserved ID string modifier".into());
    }
    let parsed = super::contained(|| Record::parse(record))
        .map_err(|_| "the SDR parser rejected the record".to_owned())?
        .map_err(|e| format!("malformed SDR: {e:?}"))?;
    let (common, conversion) = match (parsed.full_sensor(), parsed.compact_sensor()) {
        (Some(full), _) => {
            let conv = matches!(full.linearization, Linearization::Linear)
                .then_some(())
                .and_then(|()| {
                    Some(Conversion {
                        m: f64::from(full.m),
                        b: f64::from(full.b),
                        b_exp: i32::from(full.b_exponent),
                        r_exp: i32::from(full.result_exponent),
                        signed: match full.analog_data_format? {
                            DataFormat::Unsigned => None,
                            DataFormat::TwosComplement => Some(true),
                            DataFormat::OnesComplement => Some(false),
                        },
                    })
                });
            (full.common().clone(), conv)
        }
        (None, Some(compact)) => (compact.common().clone(), None),
        _ => return Ok(None),
    };
    // Sensors owned by another controller need bridged requests (not supported yet).
    if u8::from(common.key.owner_id) != 0x20 {
        return Ok(None);
    }
    let unit = if common.sensor_units.is_percentage {
        "%".to_owned()
    } else {
        // ipmi-rs renders units only next to a value ("1.00 °C"): keep the unit part.
        let shown = common.sensor_units.base_unit.display(true, 1.0f32);
        match shown.split_once(' ') {
            Some((_, u)) if u != "Unspecified" => u.to_owned(),
            _ => String::new(),
        }
    };
    Ok(Some(SensorDef {
        number: common.key.sensor_number.get(),
        name: common.sensor_id.to_string().trim().to_owned(),
        kind: common.ty.to_string().to_lowercase(),
        unit,
        conversion,
    }))
}

/// Record bytes read per Get SDR request (small enough for any BMC's buffer).
const SDR_CHUNK: u8 = 32;

impl IpmiClient {
    /// Walks the SDR repository: every sensor the BMC describes that Ferric can read. A BMC
    /// without a repository (it refuses the SDR commands as unsupported, as VirtualBMC does)
    /// has no sensors: an empty list, not an error.
    pub async fn sdr_sensors(&self, t: &BmcTarget) -> Result<Vec<SensorDef>, BmcError> {
        'restart: for _ in 0..3 {
            // Reservation 0 is what a BMC without reservations takes for whole-record reads.
            let (res_lo, res_hi) = match self.raw(t, NetFn::Storage, 0x22, vec![]).await {
                Ok(r) if r.len() >= 2 => (r[0], r[1]),
                Ok(_) => return Err(fail(t, BmcErrorKind::Failed, "short SDR reservation")),
                Err(e) if e.kind == BmcErrorKind::Unsupported => (0, 0),
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            let mut id = 0u16;
            for _ in 0..1024 {
                let mut record = Vec::new();
                let mut next = 0xffffu16;
                let mut want = 5usize;
                while record.len() < want {
                    let [lo, hi] = id.to_le_bytes();
                    let count = (want - record.len()).min(usize::from(SDR_CHUNK)) as u8;
                    let offset = record.len() as u8;
                    let d = match self
                        .raw(
                            t,
                            NetFn::Storage,
                            0x23,
                            vec![res_lo, res_hi, lo, hi, offset, count],
                        )
                        .await
                    {
                        Ok(d) => d,
                        // The reservation was cancelled (the repository changed): start over.
                        Err(e) if e.message.contains("ReservationCancelled") => continue 'restart,
                        // An empty repository has no first record.
                        Err(e)
                            if id == 0
                                && record.is_empty()
                                && matches!(
                                    e.kind,
                                    BmcErrorKind::Failed
                                        | BmcErrorKind::NotPresent
                                        | BmcErrorKind::Unsupported
                                ) =>
                        {
                            return Ok(out);
                        }
                        Err(e) => return Err(e),
                    };
                    if d.len() < 3 {
                        return Err(fail(t, BmcErrorKind::Failed, "short SDR answer"));
                    }
                    next = u16::from_le_bytes([d[0], d[1]]);
                    record.extend_from_slice(&d[2..]);
                    if want == 5 && record.len() >= 5 {
                        want = 5 + usize::from(record[4]);
                    }
                }
                record.truncate(want);
                match parse_sdr(&record) {
                    Ok(Some(def)) => out.push(def),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(bmc = %t.addr(), record = id, error = %e, "skipping an SDR")
                    }
                }
                if next == 0xffff || next == id {
                    return Ok(out);
                }
                id = next;
            }
            return Err(fail(
                t,
                BmcErrorKind::Failed,
                "the SDR repository never ends",
            ));
        }
        Err(fail(
            t,
            BmcErrorKind::Failed,
            "the SDR repository kept changing during the walk",
        ))
    }

    /// Reads one sensor; `None` when the BMC says the reading is unavailable.
    pub async fn sensor_reading(
        &self,
        t: &BmcTarget,
        s: &SensorDef,
    ) -> Result<Option<f64>, BmcError> {
        let d = self
            .raw(t, NetFn::SensorEvent, 0x2d, vec![s.number])
            .await?;
        if d.len() < 2 {
            return Err(fail(t, BmcErrorKind::Failed, "short sensor reading"));
        }
        if d[1] & 0x20 != 0 {
            return Ok(None);
        }
        Ok(s.conversion.map(|c| c.apply(d[0])))
    }
}

/// Sessions are shared by calls with the same address *and* credentials: two nodes enrolled
/// on one BMC with different passwords must not ride on each other's session.
fn session_key(t: &BmcTarget) -> String {
    use sha2::Digest;
    let pw = sha2::Sha256::digest(t.password.expose().as_bytes());
    format!("{}@{}#{}", t.user, t.addr(), hex::encode(&pw[..8]))
}

/// Login refusals in a row that make an authentication failure final.
const LOGIN_REFUSALS: u32 = 2;

/// Opens an RMCP+ session at administrator privilege; `copy_setup` lets the relay copy RAKP
/// messages. A failure that retrying cannot fix comes with its kind.
fn open(
    t: &BmcTarget,
    opts: &IpmiOptions,
    relay: &mut Option<super::relay::Relay>,
    copy_setup: bool,
) -> Result<Ipmi<Rmcp>, (Option<BmcErrorKind>, String)> {
    use std::net::ToSocketAddrs;
    if relay.is_none() {
        let addr = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| (None, format!("cannot resolve `{}`", t.host)))?;
        *relay = Some(
            super::relay::Relay::start(addr, opts.exchange_timeout / 4, 3, opts.exchange_timeout)
                .map_err(|e| (None, format!("cannot open a UDP socket: {e}")))?,
        );
    }
    let (local, copied) = relay
        .as_ref()
        .map(|r| {
            r.copy_setup
                .store(copy_setup, std::sync::atomic::Ordering::Relaxed);
            r.clear_refusal();
            (r.local, r.setup_copied.clone())
        })
        .ok_or((None, String::new()))?;
    let copied_before = copied.load(std::sync::atomic::Ordering::Relaxed);
    let mut rmcp = Rmcp::new(local, opts.exchange_timeout)
        .map_err(|e| (None, format!("cannot reach the address: {e}")))?;
    // ipmi-rs 0.6 panics on some unexpected datagrams during activation (an unwrap on a
    // decryption failure); a stray packet must cost a retry, not the agent.
    let activated = super::contained(|| {
        rmcp.activate(true, Some(&t.user), Some(t.password.expose().as_bytes()))
    })
    .map_err(|_| {
        (
            None,
            "the session setup met an unexpected datagram".to_owned(),
        )
    })?;
    activated
        .map_err(|e| {
            let detail = format!("{e:?}");
            if let Some(why) = relay.as_ref().and_then(|r| r.refusal()) {
                (Some(BmcErrorKind::Unsupported), why.to_owned())
            } else if copied.load(std::sync::atomic::Ordering::Relaxed) != copied_before {
                // A copy of a RAKP message may have made the BMC change its random number
                // under this login: not evidence of a wrong password.
                (
                    None,
                    format!(
                        "login failed after a RAKP message was sent again: {}",
                        short(&e)
                    ),
                )
            } else if detail.contains("Role") {
                (
                    Some(BmcErrorKind::InsufficientPrivilege),
                    format!("user `{}` may not open an administrator session", t.user),
                )
            } else if auth_refused(&e) {
                (
                    Some(BmcErrorKind::AuthFailed),
                    format!(
                        "the login as `{}` was refused (wrong user name or password, or no administrator rights)",
                        t.user
                    ),
                )
            } else {
                (None, format!("no RMCP+ session: {}", short(&e)))
            }
        })?;
    let mut ipmi = Ipmi::new(rmcp);
    // Without this, chassis commands fail with "insufficient privilege" (0xD4).
    ipmi.send_recv(Raw {
        netfn: NetFn::App,
        cmd: 0x3b,
        data: vec![0x04],
    })
    .map_err(|e| match e {
        IpmiError::Failed {
            completion_code, ..
        } => {
            let (kind, msg) = completion(completion_code);
            (
                Some(kind),
                format!("cannot raise the session to administrator: {msg}"),
            )
        }
        other => (
            None,
            format!(
                "cannot raise the session to administrator: {}",
                short(&other)
            ),
        ),
    })?;
    Ok(ipmi)
}

/// The first words of a debug rendering (ipmi-rs errors carry no Display).
fn short(e: &dyn std::fmt::Debug) -> String {
    let s = format!("{e:?}");
    s.chars().take(120).collect()
}

/// One command, retried until it is answered or the deadline passes.
fn exchange(
    conn: &mut Conn,
    t: &BmcTarget,
    opts: &IpmiOptions,
    netfn: NetFn,
    cmd: u8,
    data: Vec<u8>,
) -> Result<Vec<u8>, BmcError> {
    let started = Instant::now();
    if let Some(last) = conn.last
        && last.elapsed() < opts.min_interval
    {
        std::thread::sleep(opts.min_interval - last.elapsed());
    }
    let mut silent = 0u32;
    let mut refused = 0u32;
    let mut attempt = 0u32;
    let mut last_problem = String::from("no answer");
    let mut logins = 0u32;
    loop {
        if started.elapsed() >= opts.deadline {
            conn.last = Some(Instant::now());
            let kind = if attempt > 0 && silent == attempt {
                BmcErrorKind::Unreachable
            } else {
                BmcErrorKind::Timeout
            };
            return Err(fail(
                t,
                kind,
                format!(
                    "no answer after {attempt} attempts in {:.1} s ({last_problem})",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        if attempt > 0 {
            // Backoff with a little jitter, bounded by the deadline. Each try already waited an
            // exchange timeout for its answer, which paces a BMC that is merely busy; on a
            // lossy path long pauses only add up (at 30% loss they made logins miss the
            // deadline), so the pause stays short.
            let base = (25u64 << attempt.min(3)).min(200);
            let jitter = rand::random::<u64>() % (base / 2 + 1);
            let left = opts.deadline.saturating_sub(started.elapsed());
            std::thread::sleep(Duration::from_millis(base + jitter).min(left));
        }
        attempt += 1;
        if conn.ipmi.is_none() {
            // Every other login lets the relay copy RAKP messages (see relay.rs).
            logins += 1;
            match open(t, opts, &mut conn.relay, logins % 2 == 1) {
                Ok(i) => conn.ipmi = Some(i),
                Err((Some(kind), msg)) => {
                    // On a lossy path a copy of a RAKP message can spoil a login; a refusal
                    // counts once it repeats. A session setup Ferric does not accept is final.
                    refused += 1;
                    if refused >= LOGIN_REFUSALS || kind == BmcErrorKind::Unsupported {
                        conn.last = Some(Instant::now());
                        return Err(fail(t, kind, msg));
                    }
                    last_problem = msg;
                    conn.relay = None;
                    continue;
                }
                Err((None, msg)) => {
                    silent += 1;
                    last_problem = msg;
                    continue;
                }
            }
        }
        let Some(ipmi) = conn.ipmi.as_mut() else {
            continue;
        };
        let r = super::contained(|| {
            ipmi.send_recv(Raw {
                netfn,
                cmd,
                data: data.clone(),
            })
        });
        let Ok(r) = r else {
            // See `open`: a datagram ipmi-rs could not take; start a new session.
            silent += 1;
            last_problem = "an unexpected datagram".into();
            conn.ipmi = None;
            continue;
        };
        match r {
            Ok(answer) => {
                conn.last = Some(Instant::now());
                return Ok(answer);
            }
            Err(IpmiError::Failed {
                completion_code, ..
            }) => {
                conn.last = Some(Instant::now());
                let (kind, msg) = completion(completion_code);
                return Err(fail(t, kind, msg));
            }
            Err(e) => {
                // Lost (or stale) datagrams: ask again; after repeated silence the session may
                // be gone on the BMC's side, so open a new one.
                silent += 1;
                last_problem = short(&e);
                if silent.is_multiple_of(4) {
                    conn.ipmi = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{IpmiClient, IpmiOptions, decode_sel};
    use crate::bmc::sim::{SimBmc, SimOptions};
    use crate::bmc::{BmcErrorKind, BmcTarget, Secret};
    use ferric_proto::plan::PowerAction;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    fn target(sim: &SimBmc, user: &str, password: &str) -> BmcTarget {
        BmcTarget::parse(
            &format!("ipmi://{user}@{}", sim.addr),
            Secret::new(password),
        )
        .unwrap()
    }

    fn client() -> IpmiClient {
        IpmiClient::new(IpmiOptions {
            deadline: Duration::from_secs(10),
            ..IpmiOptions::default()
        })
    }

    #[tokio::test]
    async fn a_bmc_that_never_answers_the_presence_ping_gets_a_session_as_from_ipmitool() {
        let opts = SimOptions::default();
        let sim = SimBmc::start(opts.clone());
        let t = target(&sim, &opts.user, &opts.password);
        let c = client();
        let started = Instant::now();
        assert!(!c.chassis_status(&t).await.unwrap().power_on);
        // No retries were needed: the first login went through.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        c.power(&t, PowerAction::On).await.unwrap();
        assert!(sim.power_on.load(Ordering::Relaxed));
        assert!(c.chassis_status(&t).await.unwrap().power_on);
        // No ASF reached the BMC; its first datagram was Get Channel Authentication
        // Capabilities, then, inside the session, Set Session Privilege Level, Chassis Status,
        // Chassis Control and Chassis Status.
        assert_eq!(sim.asf_seen.load(Ordering::Relaxed), 0);
        let commands = sim.commands.lock().unwrap().clone();
        assert_eq!(
            commands[..5],
            [
                (0x06, 0x38),
                (0x06, 0x3b),
                (0x00, 0x01),
                (0x00, 0x02),
                (0x00, 0x01)
            ],
            "{commands:x?}"
        );
        // A BMC without an SDR repository has no sensors: not an error.
        assert_eq!(c.sdr_sensors(&t).await.unwrap(), vec![]);
        // Close Session reaches the BMC.
        c.close_all().await;
        assert_eq!(
            sim.commands.lock().unwrap().last().copied(),
            Some((0x06, 0x3c))
        );
    }

    #[tokio::test]
    async fn a_wrong_password_is_refused_by_name_and_quickly() {
        let opts = SimOptions::default();
        let sim = SimBmc::start(opts.clone());
        let started = Instant::now();
        let e = client()
            .chassis_status(&target(&sim, &opts.user, "not-the-password"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, BmcErrorKind::AuthFailed, "{e}");
        assert!(e.message.contains("`admin`"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn sessions_without_rmcp_plus_or_without_cipher_suite_3_are_refused() {
        for (opts, says) in [
            (
                SimOptions {
                    ipmi2: false,
                    ..SimOptions::default()
                },
                "only IPMI 1.5",
            ),
            (
                SimOptions {
                    integrity: 0,
                    ..SimOptions::default()
                },
                "cipher suite 3",
            ),
            (
                SimOptions {
                    confidentiality: 0,
                    ..SimOptions::default()
                },
                "cipher suite 3",
            ),
        ] {
            let sim = SimBmc::start(opts.clone());
            let started = Instant::now();
            let e = client()
                .chassis_status(&target(&sim, &opts.user, &opts.password))
                .await
                .unwrap_err();
            assert_eq!(e.kind, BmcErrorKind::Unsupported, "{e}");
            assert!(e.message.contains(says), "{e}");
            // Final at once, not retried until the deadline.
            assert!(started.elapsed() < Duration::from_secs(3), "{e}");
            // Nothing was sent inside a session.
            let commands = sim.commands.lock().unwrap().clone();
            assert!(commands.iter().all(|c| *c == (0x06, 0x38)), "{commands:x?}");
        }
    }

    #[tokio::test]
    async fn a_bmc_that_does_answer_the_ping_never_sees_it_either() {
        let opts = SimOptions {
            answer_ping: true,
            ..SimOptions::default()
        };
        let sim = SimBmc::start(opts.clone());
        let t = target(&sim, &opts.user, &opts.password);
        assert!(!client().chassis_status(&t).await.unwrap().power_on);
        assert_eq!(sim.asf_seen.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sel_entries_decode_with_their_codes_where_no_table_names_them() {
        // Temperature sensor 1, threshold event "upper critical going high", asserted, logged
        // at 2026-12-02 (a real time stamp).
        let at: u32 = 1_796_234_995;
        let mut raw = [1, 0, 2, 0, 0, 0, 0, 0x20, 0, 4, 1, 1, 1, 0x59, 0x5a, 0x50];
        raw[3..7].copy_from_slice(&at.to_le_bytes());
        let e = decode_sel(&raw);
        assert_eq!(
            (
                e.id,
                e.at_s,
                e.sensor.as_str(),
                e.sensor_number,
                e.event.as_str(),
                e.asserted
            ),
            (
                1,
                Some(at),
                "Temperature",
                1,
                "Upper Critical - going high",
                true
            )
        );
        assert_eq!(e.raw, "010002f35e106b200004010101595a50");
        // A time stamp counted from the BMC's start is no date; a deassertion; a sensor-specific
        // offset the tables know (processor thermal trip).
        let e = decode_sel(&[
            2, 0, 2, 0x10, 0, 0, 0, 0x20, 0, 4, 7, 2, 0xef, 1, 0xff, 0xff,
        ]);
        assert_eq!(
            (e.at_s, e.sensor.as_str(), e.event.as_str(), e.asserted),
            (None, "Processor", "Thermal Trip", false)
        );
        // A temperature sensor has no sensor-specific offsets: named by its codes.
        let e = decode_sel(&[3, 0, 2, 0, 0, 0, 0, 0x20, 0, 4, 1, 1, 0x6f, 1, 0xff, 0xff]);
        assert_eq!(e.event, "event type 0x6f offset 1");
        // OEM records and unknown record types are named, not refused.
        let e = decode_sel(&[4, 0, 0xc1, 0, 0, 0, 0x60, 0x57, 0x01, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(e.sensor, "OEM record 0xc1");
        assert!(e.event.contains("manufacturer 343"), "{}", e.event);
        let e = decode_sel(&[5, 0, 0xe0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!((e.sensor.as_str(), e.at_s), ("OEM record 0xe0", None));
        let e = decode_sel(&[6, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(e.sensor, "record type 0x10");
        assert!(e.event.starts_with("not decoded"), "{}", e.event);
    }

    #[test]
    fn the_fake_drivers_event_log_entry_is_what_the_decoder_makes_of_its_bytes() {
        let fake = crate::driver::fake_sel_entry();
        let mut raw = [0u8; 16];
        hex::decode_to_slice(&fake.raw, &mut raw).unwrap();
        assert_eq!(decode_sel(&raw), fake);
    }
}
