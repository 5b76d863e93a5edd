//! Sensors over LAN: the walk of the BMC's SDR repository, and Get Sensor Reading.

use super::client::IpmiClient;
use super::sdr::{SensorDef, parse_sdr};
use super::session::fail;
use crate::bmc::{BmcError, BmcErrorKind, BmcTarget};
use ipmi_rs::connection::NetFn;

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
