//! The machine the agent runs on: its hardware read from `/proc` and `/sys`
//! ([`crate::inventory`]) and, with the `inband` feature, its BMC's LAN settings through the
//! kernel's IPMI device.

use super::{DriverError, Machine};
use crate::inventory::{Root, read};
use async_trait::async_trait;
use ferric_proto::msg::Inspection;
use std::path::PathBuf;

/// This machine.
#[derive(Debug, Clone)]
pub struct LocalMachine {
    /// Where `/proc` and `/sys` are.
    pub root: Root,
    /// The IPMI device (`/dev/ipmi0`).
    pub ipmi_device: PathBuf,
}

impl Default for LocalMachine {
    fn default() -> Self {
        LocalMachine {
            root: Root::default(),
            ipmi_device: PathBuf::from("/dev/ipmi0"),
        }
    }
}

#[async_trait]
impl Machine for LocalMachine {
    async fn inspect(&self) -> Result<Inspection, DriverError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let inventory = read(&me.root);
            let (bmc, bmc_error) = me.bmc_lan();
            Inspection {
                inventory,
                bmc,
                bmc_error,
            }
        })
        .await
        .map_err(|e| {
            DriverError::new(
                ferric_proto::plan::ErrorKind::Internal,
                format!("inspection task failed: {e}"),
            )
        })
    }
}

impl LocalMachine {
    #[cfg(feature = "inband")]
    fn bmc_lan(&self) -> (Option<ferric_proto::msg::BmcLan>, Option<String>) {
        let lan = crate::bmc::inband::Inband::open(&self.ipmi_device).and_then(|mut d| d.lan());
        match lan {
            Ok(l) => (
                Some(ferric_proto::msg::BmcLan {
                    ip: l.ip,
                    mac: l.mac,
                }),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        }
    }

    #[cfg(not(feature = "inband"))]
    fn bmc_lan(&self) -> (Option<ferric_proto::msg::BmcLan>, Option<String>) {
        (
            None,
            Some("this agent was built without in-band IPMI (cargo feature `inband`)".into()),
        )
    }
}
