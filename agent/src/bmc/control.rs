//! The agent's BMC driver: steps name a BMC, the coordinator supplies where it is and how to
//! log in ([`BmcControl::set_bmcs`], kept in memory only), and [`IpmiClient`] does the talking.
//! Power steps confirm the state they asked for; the poll reads power and sensors of every BMC
//! side by side for the coordinator's power sync and telemetry.

use super::ipmi::{IpmiClient, SensorDef, decode_sel};
use super::{BmcError, BmcErrorKind, BmcTarget, Secret};
use crate::driver::{BmcControl, DriverError, DriverResult, StepDone};
use crate::lock;
use async_trait::async_trait;
use ferric_proto::msg::{BmcCredential, BmcState, SensorReading};
use ferric_proto::plan::{BootDevice, ErrorKind, PowerAction, StepOutput};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a hard power action may take to show in the chassis status.
pub const POWER_SETTLE: Duration = Duration::from_secs(60);

/// BMCs driven over IPMI-over-LAN.
#[derive(Debug, Clone)]
pub struct IpmiBmcs {
    client: IpmiClient,
    bmcs: Arc<Mutex<HashMap<String, BmcTarget>>>,
    sdrs: Arc<Mutex<HashMap<String, Vec<SensorDef>>>>,
    settle: Duration,
}

/// A BMC failure as a step failure: the stable kind, and a message naming the BMC.
fn step_error(name: &str, e: BmcError) -> DriverError {
    let kind = match e.kind {
        BmcErrorKind::AuthFailed => ErrorKind::AuthFailed,
        BmcErrorKind::InsufficientPrivilege => ErrorKind::InsufficientPrivilege,
        BmcErrorKind::Unreachable => ErrorKind::Unreachable,
        BmcErrorKind::Unsupported => ErrorKind::Unsupported,
        BmcErrorKind::Timeout => ErrorKind::Timeout,
        BmcErrorKind::Failed => ErrorKind::Io,
        BmcErrorKind::NotPresent => ErrorKind::NotFound,
    };
    DriverError::new(kind, format!("bmc `{name}` ({e})"))
}

impl IpmiBmcs {
    /// A driver on this client; power actions wait up to `settle` for the state to show.
    pub fn new(client: IpmiClient, settle: Duration) -> IpmiBmcs {
        IpmiBmcs {
            client,
            bmcs: Arc::default(),
            sdrs: Arc::default(),
            settle,
        }
    }

    fn target(&self, name: &str) -> Result<BmcTarget, DriverError> {
        lock(&self.bmcs).get(name).cloned().ok_or_else(|| {
            DriverError::new(
                ErrorKind::NotFound,
                format!(
                    "bmc `{name}` is not driven by this agent (the coordinator has sent no \
                     address or credentials for it)"
                ),
            )
        })
    }

    /// Polls the chassis until power is `on`, for up to `limit`.
    async fn wait_power(
        &self,
        name: &str,
        t: &BmcTarget,
        on: bool,
        limit: Duration,
    ) -> Result<(), DriverError> {
        let started = Instant::now();
        loop {
            let st = self
                .client
                .chassis_status(t)
                .await
                .map_err(|e| step_error(name, e))?;
            if st.power_on == on {
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(DriverError::new(
                    ErrorKind::Timeout,
                    format!(
                        "bmc `{name}` (BMC {}): power is still {} {:.0} s after asking for {}",
                        t.addr(),
                        if st.power_on { "on" } else { "off" },
                        started.elapsed().as_secs_f64(),
                        if on { "on" } else { "off" },
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sensor definitions of a BMC: from the cache, or a fresh SDR walk.
    async fn sensor_defs(
        &self,
        name: &str,
        t: &BmcTarget,
        fresh: bool,
    ) -> Result<Vec<SensorDef>, BmcError> {
        if !fresh && let Some(defs) = lock(&self.sdrs).get(name).cloned() {
            return Ok(defs);
        }
        let defs = self.client.sdr_sensors(t).await?;
        lock(&self.sdrs).insert(name.to_owned(), defs.clone());
        Ok(defs)
    }

    async fn readings(
        &self,
        name: &str,
        t: &BmcTarget,
        fresh: bool,
    ) -> Result<Vec<SensorReading>, BmcError> {
        let defs = self.sensor_defs(name, t, fresh).await?;
        let mut out = Vec::with_capacity(defs.len());
        for d in &defs {
            let value = self.client.sensor_reading(t, d).await?;
            out.push(SensorReading {
                name: d.name.clone(),
                kind: d.kind.clone(),
                value,
                unit: d.unit.clone(),
            });
        }
        Ok(out)
    }

    async fn poll_one(&self, name: String, t: BmcTarget, sensors: bool) -> BmcState {
        let mut state = BmcState {
            name: name.clone(),
            at_ms: crate::clock::now_ms(),
            power_on: None,
            sensors: vec![],
            error: None,
        };
        match self.client.chassis_status(&t).await {
            Ok(st) => state.power_on = Some(st.power_on),
            Err(e) => {
                let e = step_error(&name, e);
                state.error = Some(BmcState::error_text(e.kind, &e.message));
                return state;
            }
        }
        if sensors {
            match self.readings(&name, &t, false).await {
                Ok(r) => state.sensors = r,
                Err(e) => {
                    let e = step_error(&name, e);
                    state.error = Some(BmcState::error_text(e.kind, &e.message));
                }
            }
        }
        state
    }
}

#[async_trait]
impl BmcControl for IpmiBmcs {
    async fn power(&self, bmc: &str, action: PowerAction) -> Result<StepDone, DriverError> {
        let t = self.target(bmc)?;
        let err = |e| step_error(bmc, e);
        let before = self.client.chassis_status(&t).await.map_err(err)?.power_on;
        // What to send, given the state now: power cycle and reset do nothing on a machine
        // that is off (IPMI 2.0, 28.3), so they power it on.
        let (send, changed) = match (action, before) {
            (PowerAction::Status, _) => (None, false),
            (PowerAction::On, true) | (PowerAction::Off | PowerAction::Soft, false) => {
                (None, false)
            }
            (PowerAction::Cycle | PowerAction::Reset, false) => (Some(PowerAction::On), true),
            (a, _) => (Some(a), true),
        };
        if let Some(a) = send {
            match self.client.power(&t, a).await {
                // Some BMCs (VirtualBMC among them) refuse Power Cycle; off, then on, is the
                // same for the machine.
                Err(e) if a == PowerAction::Cycle && e.kind == BmcErrorKind::Unsupported => {
                    info!(bmc, "the BMC refuses power cycle: powering off, then on");
                    self.client.power(&t, PowerAction::Off).await.map_err(err)?;
                    self.wait_power(bmc, &t, false, self.settle).await?;
                    self.client.power(&t, PowerAction::On).await.map_err(err)?;
                }
                r => r.map_err(err)?,
            }
            info!(bmc, action = a.as_str(), "power action sent");
            if let Some(on) = action.leaves_on() {
                // A soft off is the OS's to finish: wait as long as the step may.
                let limit = if a == PowerAction::Soft {
                    Duration::MAX
                } else {
                    self.settle
                };
                self.wait_power(bmc, &t, on, limit).await?;
            }
        }
        let on = self.client.chassis_status(&t).await.map_err(err)?.power_on;
        Ok(StepDone {
            changed,
            output: Some(StepOutput::Power { on }),
        })
    }

    async fn boot_device(
        &self,
        bmc: &str,
        device: BootDevice,
        persistent: bool,
        uefi: bool,
    ) -> DriverResult {
        let t = self.target(bmc)?;
        let err = |e| step_error(bmc, e);
        let before = self.client.boot_device(&t).await.map_err(err)?;
        if before.device == Some(device) && before.persistent == persistent && before.uefi == uefi {
            return Ok(false);
        }
        self.client
            .set_boot_device(&t, device, persistent, uefi)
            .await
            .map_err(err)?;
        let after = self.client.boot_device(&t).await.map_err(err)?;
        if after.device != Some(device) {
            return Err(DriverError::new(
                ErrorKind::Io,
                format!(
                    "bmc `{bmc}` (BMC {}): asked for boot device {device:?}, the BMC reports {:?}",
                    t.addr(),
                    after.device
                ),
            ));
        }
        Ok(true)
    }

    async fn sensors(&self, bmc: &str) -> Result<Vec<SensorReading>, DriverError> {
        let t = self.target(bmc)?;
        self.readings(bmc, &t, true)
            .await
            .map_err(|e| step_error(bmc, e))
    }

    async fn sel(&self, bmc: &str, clear: bool) -> Result<StepDone, DriverError> {
        let t = self.target(bmc)?;
        let failed = |e| step_error(bmc, e);
        let mut raw = self.client.sel_entries(&t).await.map_err(failed)?;
        let mut cleared = false;
        if clear {
            // Entries logged while the log was read would be lost with it: read again until
            // the count matches (an entry logged between that count and the clear is lost, as
            // with any IPMI tool; the BMC offers nothing atomic).
            for _ in 0..3 {
                let info = self.client.sel_info(&t).await.map_err(failed)?;
                if usize::from(info.entries) <= raw.len() {
                    self.client.sel_clear(&t).await.map_err(failed)?;
                    cleared = true;
                    break;
                }
                raw = self.client.sel_entries(&t).await.map_err(failed)?;
            }
            if !cleared {
                return Err(DriverError::new(
                    ErrorKind::Conflict,
                    format!(
                        "bmc `{bmc}`: the event log kept growing while it was read; not cleared"
                    ),
                ));
            }
        }
        let entries: Vec<_> = raw.iter().map(decode_sel).collect();
        info!(bmc, entries = entries.len(), cleared, "event log read");
        Ok(StepDone {
            changed: cleared && !entries.is_empty(),
            output: Some(StepOutput::Sel(entries)),
        })
    }

    fn set_bmcs(&self, bmcs: Vec<BmcCredential>) {
        let mut map = HashMap::new();
        for c in bmcs {
            match BmcTarget::parse(&c.address, Secret::new(c.password)) {
                Ok(t) => {
                    map.insert(c.name, t);
                }
                // The address was checked at enrollment; a bad one here is named, not used.
                Err(e) => warn!(bmc = %c.name, error = %e, "ignoring a BMC with a bad address"),
            }
        }
        let mut cur = lock(&self.bmcs);
        // Sensor tables of BMCs whose address changed are read again.
        lock(&self.sdrs).retain(|n, _| map.get(n).is_some_and(|t| cur.get(n) == Some(t)));
        if *cur != map {
            info!(bmcs = map.len(), "BMC set updated");
        }
        *cur = map;
    }

    async fn close(&self) {
        self.client.close_all().await;
    }

    async fn poll(&self, sensors: bool) -> Vec<BmcState> {
        let targets: Vec<(String, BmcTarget)> = lock(&self.bmcs)
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let this = self.clone();
        poll_each(targets, move |name, t| {
            let this = this.clone();
            async move { this.poll_one(name, t, sensors).await }
        })
        .await
    }
}

/// Reads every BMC of `targets` side by side with `read`; the states sorted by name.
pub(crate) async fn poll_each<T, F, Fut>(targets: Vec<(String, T)>, read: F) -> Vec<BmcState>
where
    F: Fn(String, T) -> Fut,
    Fut: std::future::Future<Output = BmcState> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (name, t) in targets {
        tasks.spawn(read(name, t));
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(s) = r {
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
