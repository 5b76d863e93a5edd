//! The agent's Redfish BMC driver, on ferric-redfish's client, and [`Bmcs`]: the driver the
//! agent runs, which sends each BMC to the driver of its address' scheme (`ipmi://` to
//! [`IpmiBmcs`], `redfish://` and `redfish+http://` here).

use super::control::IpmiBmcs;
use crate::driver::{BmcControl, DriverError, DriverResult, StepDone};
use crate::lock;
use async_trait::async_trait;
use ferric_proto::Secret;
use ferric_proto::hardware::Inventory;
use ferric_proto::msg::{BmcAddress, BmcCredential, BmcState, SensorReading};
use ferric_proto::plan::{BootDevice, ErrorKind, PowerAction, StepOutput};
use ferric_redfish::{Client, Target};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// A Redfish failure as a step failure: the stable kind, and a message naming the BMC.
fn step_error(name: &str, e: ferric_redfish::Error) -> DriverError {
    use ferric_redfish::ErrorKind as K;
    let kind = match e.kind {
        K::AuthFailed | K::Untrusted => ErrorKind::AuthFailed,
        K::InsufficientPrivilege => ErrorKind::InsufficientPrivilege,
        K::Unreachable => ErrorKind::Unreachable,
        K::Unsupported => ErrorKind::Unsupported,
        K::NotFound => ErrorKind::NotFound,
        K::Timeout => ErrorKind::Timeout,
        K::Failed => ErrorKind::Io,
    };
    DriverError::new(kind, format!("bmc `{name}` ({e})"))
}

/// Reads a PEM bundle of CAs that sign BMC certificates (`--bmc-ca`).
pub fn read_ca_bundle(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        roots.add(c).map_err(|e| {
            format!(
                "{}: a certificate is not usable as a CA: {e}",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(roots)
}

/// BMCs driven over Redfish.
#[derive(Debug, Clone)]
pub struct RedfishBmcs {
    client: Arc<Client>,
    bmcs: Arc<Mutex<HashMap<String, Target>>>,
}

impl RedfishBmcs {
    /// A driver on this client.
    pub fn new(client: Client) -> RedfishBmcs {
        RedfishBmcs {
            client: Arc::new(client),
            bmcs: Arc::default(),
        }
    }

    fn target(&self, name: &str) -> Result<Target, DriverError> {
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

    async fn poll_one(&self, name: String, t: Target, sensors: bool) -> BmcState {
        let mut state = BmcState {
            name: name.clone(),
            at_ms: crate::clock::now_ms(),
            power_on: None,
            sensors: vec![],
            error: None,
        };
        match self.client.power_on(&t).await {
            Ok(on) => state.power_on = Some(on),
            Err(e) => {
                let e = step_error(&name, e);
                state.error = Some(BmcState::error_text(e.kind, &e.message));
                return state;
            }
        }
        if sensors {
            match self.client.sensors(&t).await {
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
impl BmcControl for RedfishBmcs {
    async fn power(&self, bmc: &str, action: PowerAction) -> Result<StepDone, DriverError> {
        let t = self.target(bmc)?;
        let (changed, on) = self
            .client
            .power(&t, action)
            .await
            .map_err(|e| step_error(bmc, e))?;
        if changed {
            info!(bmc, action = action.as_str(), "power action sent");
        }
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
        self.client
            .set_boot_override(&t, device, persistent, uefi)
            .await
            .map_err(|e| step_error(bmc, e))
    }

    async fn sensors(&self, bmc: &str) -> Result<Vec<SensorReading>, DriverError> {
        let t = self.target(bmc)?;
        self.client
            .sensors(&t)
            .await
            .map_err(|e| step_error(bmc, e))
    }

    async fn sel(&self, bmc: &str, clear: bool) -> Result<StepDone, DriverError> {
        let t = self.target(bmc)?;
        let (entries, cleared) = self
            .client
            .event_log(&t, clear)
            .await
            .map_err(|e| step_error(bmc, e))?;
        info!(bmc, entries = entries.len(), cleared, "event log read");
        Ok(StepDone {
            changed: cleared && !entries.is_empty(),
            output: Some(StepOutput::Sel(entries)),
        })
    }

    async fn inventory(&self, bmc: &str) -> Result<Inventory, DriverError> {
        let t = self.target(bmc)?;
        self.client
            .inventory(&t)
            .await
            .map_err(|e| step_error(bmc, e))
    }

    async fn media(&self, bmc: &str, image: Option<&str>) -> Result<StepDone, DriverError> {
        let t = self.target(bmc)?;
        let err = |e| step_error(bmc, e);
        let (changed, now) = match image {
            Some(url) => {
                let before = self.client.virtual_media(&t).await.map_err(err)?;
                let had = before.iter().any(|s| s.image.as_deref() == Some(url));
                let slot = self.client.insert_media(&t, url).await.map_err(err)?;
                info!(bmc, image = url, "virtual media inserted");
                (!had, slot.image)
            }
            None => (self.client.eject_media(&t).await.map_err(err)?, None),
        };
        Ok(StepDone {
            changed,
            output: Some(StepOutput::Media { image: now }),
        })
    }

    fn set_bmcs(&self, bmcs: Vec<BmcCredential>) {
        let mut map = HashMap::new();
        for c in bmcs {
            match Target::parse(&c.address, Secret::new(c.password)) {
                Ok(t) => {
                    map.insert(c.name, t);
                }
                Err(e) => warn!(bmc = %c.name, error = %e, "ignoring a BMC with a bad address"),
            }
        }
        let mut cur = lock(&self.bmcs);
        if *cur != map {
            info!(bmcs = map.len(), "Redfish BMC set updated");
        }
        *cur = map;
    }

    async fn close(&self) {
        self.client.close_all().await;
    }

    async fn poll(&self, sensors: bool) -> Vec<BmcState> {
        let targets: Vec<(String, Target)> = lock(&self.bmcs)
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let this = self.clone();
        super::control::poll_each(targets, move |name, t| {
            let this = this.clone();
            async move { this.poll_one(name, t, sensors).await }
        })
        .await
    }
}

/// The agent's BMC driver: each BMC goes to the driver of its address' scheme.
#[derive(Debug, Clone)]
pub struct Bmcs {
    ipmi: Arc<IpmiBmcs>,
    redfish: Arc<RedfishBmcs>,
    redfish_names: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Bmcs {
    /// A driver sending `ipmi://` BMCs to `ipmi` and Redfish ones to `redfish`.
    pub fn new(ipmi: IpmiBmcs, redfish: RedfishBmcs) -> Bmcs {
        Bmcs {
            ipmi: Arc::new(ipmi),
            redfish: Arc::new(redfish),
            redfish_names: Arc::default(),
        }
    }

    fn of(&self, bmc: &str) -> &dyn BmcControl {
        if lock(&self.redfish_names).contains(bmc) {
            self.redfish.as_ref()
        } else {
            self.ipmi.as_ref()
        }
    }
}

#[async_trait]
impl BmcControl for Bmcs {
    async fn power(&self, bmc: &str, action: PowerAction) -> Result<StepDone, DriverError> {
        self.of(bmc).power(bmc, action).await
    }

    async fn boot_device(
        &self,
        bmc: &str,
        device: BootDevice,
        persistent: bool,
        uefi: bool,
    ) -> DriverResult {
        self.of(bmc)
            .boot_device(bmc, device, persistent, uefi)
            .await
    }

    async fn sensors(&self, bmc: &str) -> Result<Vec<SensorReading>, DriverError> {
        self.of(bmc).sensors(bmc).await
    }

    async fn sel(&self, bmc: &str, clear: bool) -> Result<StepDone, DriverError> {
        self.of(bmc).sel(bmc, clear).await
    }

    async fn inventory(&self, bmc: &str) -> Result<Inventory, DriverError> {
        self.of(bmc).inventory(bmc).await
    }

    async fn media(&self, bmc: &str, image: Option<&str>) -> Result<StepDone, DriverError> {
        self.of(bmc).media(bmc, image).await
    }

    fn set_bmcs(&self, bmcs: Vec<BmcCredential>) {
        let (redfish, ipmi): (Vec<_>, Vec<_>) = bmcs
            .into_iter()
            .partition(|c| BmcAddress::parse(&c.address).is_ok_and(|a| a.scheme.is_redfish()));
        *lock(&self.redfish_names) = redfish.iter().map(|c| c.name.clone()).collect();
        self.redfish.set_bmcs(redfish);
        self.ipmi.set_bmcs(ipmi);
    }

    async fn poll(&self, sensors: bool) -> Vec<BmcState> {
        let (mut a, b) = tokio::join!(self.ipmi.poll(sensors), self.redfish.poll(sensors));
        a.extend(b);
        a.sort_by(|x, y| x.name.cmp(&y.name));
        a
    }

    async fn close(&self) {
        tokio::join!(self.ipmi.close(), self.redfish.close());
    }
}
