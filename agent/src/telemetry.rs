//! Host telemetry. A [`Sampler`] produces a sample on demand; the link stamps it and sends it
//! as a QUIC datagram every interval the coordinator asks for.

use ferric_proto::msg::{DiskSample, GuestSample, NicSample, TelemetrySample};
use std::sync::{Arc, Mutex};

/// Produces host samples. Injected so that tests and benchmarks need no real host probe.
pub trait Sampler: Send + Sync + std::fmt::Debug {
    /// A fresh sample (`seq`, `at_ms` and `progress` are filled in by the caller).
    fn sample(&self) -> TelemetrySample;
}

/// Per-guest statistics of a hypervisor host (blocking; called off the async executor).
pub trait GuestStats: Send + Sync + std::fmt::Debug {
    /// One sample per guest Ferric manages.
    fn guests(&self) -> Vec<GuestSample>;
}

/// The host, plus the guests it runs.
#[derive(Debug)]
pub struct HostAndGuests {
    /// Host sampler.
    pub host: Arc<dyn Sampler>,
    /// Guest statistics.
    pub guests: Arc<dyn GuestStats>,
}

impl Sampler for HostAndGuests {
    fn sample(&self) -> TelemetrySample {
        let mut s = self.host.sample();
        s.guests = self.guests.guests();
        s
    }
}

/// Samples the real host with sysinfo, refreshing only what it sends.
#[derive(Debug)]
pub struct SysinfoSampler {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    sys: sysinfo::System,
    nets: Option<sysinfo::Networks>,
    disks: Option<sysinfo::Disks>,
    ticks: u64,
}

/// Re-read the list of disks every this many samples (they rarely change).
const RELIST_EVERY: u64 = 60;

impl SysinfoSampler {
    /// A sampler of this host.
    ///
    /// # Errors
    /// When the host's process and memory information cannot be read.
    pub fn new() -> Result<Self, sysinfo::Error> {
        let mut sys = sysinfo::System::new()?;
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        Ok(Self {
            inner: Mutex::new(Inner {
                sys,
                nets: sysinfo::Networks::new_with_refreshed_list().ok(),
                disks: sysinfo::Disks::new_with_refreshed_list().ok(),
                ticks: 0,
            }),
        })
    }
}

impl Sampler for SysinfoSampler {
    fn sample(&self) -> TelemetrySample {
        let mut g = crate::lock(&self.inner);
        let inner = &mut *g;
        inner.ticks += 1;
        let relist = inner.ticks.is_multiple_of(RELIST_EVERY);
        inner.sys.refresh_cpu_usage();
        inner.sys.refresh_memory();
        if let Some(n) = inner.nets.as_mut() {
            // Interfaces come and go with guests and bridges (placement reads this list):
            // re-list them every sample; it costs well under a millisecond.
            n.refresh(true);
        }
        if let Some(d) = inner.disks.as_mut() {
            d.refresh(relist);
        }
        let nics = inner
            .nets
            .as_ref()
            .map(|n| {
                n.iter()
                    .map(|(name, data)| NicSample {
                        name: name.to_string_lossy().into_owned(),
                        rx_bytes: data.total_received(),
                        tx_bytes: data.total_transmitted(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let disks = inner
            .disks
            .as_ref()
            .map(|d| {
                d.iter()
                    .map(|disk| DiskSample {
                        mount: disk.mount_point().display().to_string(),
                        total_bytes: disk.total_space(),
                        available_bytes: disk.available_space(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        TelemetrySample {
            seq: 0,
            at_ms: 0,
            cpu_percent: inner.sys.global_cpu_usage(),
            cpus: inner.sys.cpus().len() as u32,
            mem_used_bytes: inner.sys.used_memory(),
            mem_total_bytes: inner.sys.total_memory(),
            load1: sysinfo::System::load_average()
                .map(|l| l.one as f32)
                .unwrap_or(0.0),
            disks,
            nics,
            progress: None,
            guests: vec![],
        }
    }
}

/// A sampler returning fixed values, for in-process tiers and benchmarks that run many agents
/// in one process (sampling the same host once per agent would measure nothing new).
#[derive(Debug, Clone)]
pub struct FixedSampler(pub TelemetrySample);

impl Sampler for FixedSampler {
    fn sample(&self) -> TelemetrySample {
        self.0.clone()
    }
}

impl FixedSampler {
    /// A small plausible sample.
    pub fn small() -> Self {
        Self(TelemetrySample {
            seq: 0,
            at_ms: 0,
            cpu_percent: 1.5,
            cpus: 2,
            mem_used_bytes: 512 << 20,
            mem_total_bytes: 4 << 30,
            load1: 0.1,
            disks: vec![],
            nics: vec![],
            progress: None,
            guests: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysinfo_sample_reads_this_host() {
        let s = SysinfoSampler::new().unwrap();
        let a = s.sample();
        assert!(a.cpus >= 1);
        assert!(a.mem_total_bytes > 0 && a.mem_used_bytes <= a.mem_total_bytes);
        assert!(
            a.nics.iter().any(|n| n.name == "lo"),
            "loopback NIC is listed: {:?}",
            a.nics
        );
        // The sample fits a datagram on a typical host.
        let d = ferric_proto::frame::to_datagram(&a).unwrap();
        assert!(d.len() < 1200, "sample of {} bytes", d.len());
    }
}
