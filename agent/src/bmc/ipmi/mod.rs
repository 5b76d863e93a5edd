//! IPMI: Ferric's own encodings of the commands it sends (from the IPMI 2.0 specification;
//! the in-band device sends them through `ipmi-rs`' command trait), the decoders of what BMCs
//! store, and the IPMI-over-LAN client on ferric-ipmi's RMCP+ session (cipher suite 17 or 3).
//!
//! * `commands.rs`: requests and answers of the chassis, boot and device commands, and
//!   completion codes as error kinds (the in-band device uses them too);
//! * `sel.rs` and `sdr.rs`: System Event Log entries and Sensor Data Records, decoded from
//!   untrusted bytes without a panic (both have fuzz targets);
//! * `client.rs`, `session.rs`, `sensors.rs`: the LAN client [`IpmiClient`] — a session per
//!   BMC, retries, the commands as async calls, the SDR walk and sensor readings.

#[cfg(feature = "agent")]
mod client;
mod commands;
mod sdr;
mod sel;
#[cfg(feature = "agent")]
mod sensors;
#[cfg(feature = "agent")]
mod session;
#[cfg(test)]
#[cfg(feature = "agent")]
mod tests;

#[cfg(feature = "agent")]
pub use client::IpmiClient;
pub use commands::{
    BootSetting, ChassisStatus, DeviceId, Raw, SelInfo, boot_flags_request, completion,
    parse_boot_flags, parse_device_id,
};
pub use sdr::{Conversion, SdrError, SensorDef, parse_sdr};
pub use sel::decode_sel;
#[cfg(feature = "agent")]
pub use session::IpmiOptions;
