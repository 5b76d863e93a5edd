//! Where a new guest goes: filters drop hosts that cannot take it (each says why), a weigher
//! picks the least loaded of the rest. Pure logic; the API feeds it hosts built from the store
//! and the latest telemetry.

pub use ferric_api::guests::{CPU_ALLOCATION_RATIO, HostView, RAM_ALLOCATION_RATIO};
use ferric_proto::msg::Capability;

/// What a guest needs.
#[derive(Debug, Clone)]
pub struct Request {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Root disk, bytes.
    pub disk_bytes: u64,
    /// Bridges its NICs plug into.
    pub bridges: Vec<String>,
}

/// Why no host fits: every host with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no host fits the guest: {}", if .0.is_empty() { "no hypervisor host is enrolled".to_owned() } else { .0.iter().map(|(h, r)| format!("{h}: {r}")).collect::<Vec<_>>().join("; ") })]
pub struct NoHost(pub Vec<(String, String)>);

fn why_not(h: &HostView, r: &Request) -> Option<String> {
    if !h.connected {
        return Some("agent is not connected".into());
    }
    let missing: Vec<&str> = [Capability::Compute, Capability::Storage]
        .into_iter()
        .filter(|c| !h.capabilities.contains(c))
        .map(Capability::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "its agent has no {} driver (it runs without --driver libvirt)",
            missing.join(" or ")
        ));
    }
    if h.cpus == 0 || h.mem_total_mib == 0 {
        return Some("no telemetry from the host yet".into());
    }
    if i64::from(r.vcpus) > h.vcpus_free() {
        return Some(format!(
            "needs {} vCPUs, {} free",
            r.vcpus,
            h.vcpus_free().max(0)
        ));
    }
    if r.memory_mib as i64 > h.mem_free_mib() {
        return Some(format!(
            "needs {} MiB memory, {} MiB free",
            r.memory_mib,
            h.mem_free_mib().max(0)
        ));
    }
    if r.disk_bytes as i64 > h.disk_free() {
        return Some(format!(
            "needs {} MiB disk, {} MiB free",
            r.disk_bytes >> 20,
            h.disk_free().max(0) >> 20
        ));
    }
    for b in &r.bridges {
        if !h.interfaces.iter().any(|i| i == b) {
            return Some(format!("has no bridge `{b}`"));
        }
    }
    None
}

/// Picks the host for `r`: among those that pass every filter, the one with the most free
/// memory and vCPUs relative to its size (ties go to the first name).
pub fn place<'a>(hosts: &'a [HostView], r: &Request) -> Result<&'a HostView, NoHost> {
    let mut rejected = Vec::new();
    let mut best: Option<(&HostView, f64)> = None;
    for h in hosts {
        if let Some(why) = why_not(h, r) {
            rejected.push((h.name.clone(), why));
            continue;
        }
        let mem = (h.mem_free_mib() - r.memory_mib as i64) as f64 / h.mem_total_mib as f64;
        let cpu = (h.vcpus_free() - i64::from(r.vcpus)) as f64
            / (f64::from(h.cpus) * CPU_ALLOCATION_RATIO);
        let weight = mem + cpu;
        if best.is_none_or(|(b, w)| weight > w || (weight == w && h.name < b.name)) {
            best = Some((h, weight));
        }
    }
    best.map(|(h, _)| h).ok_or(NoHost(rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, cpus: u32, mem_gib: u64, used_mib: u64, bridges: &[&str]) -> HostView {
        HostView {
            name: name.into(),
            connected: true,
            cpus,
            mem_total_mib: mem_gib << 10,
            disk_free_bytes: 100 << 30,
            interfaces: bridges.iter().map(|b| b.to_string()).collect(),
            vcpus_used: 0,
            mem_used_mib: used_mib,
            disk_used_bytes: 0,
            guests: 0,
            capabilities: Capability::ALL.to_vec(),
        }
    }

    fn req(mem_mib: u64, bridges: &[&str]) -> Request {
        Request {
            vcpus: 2,
            memory_mib: mem_mib,
            disk_bytes: 10 << 30,
            bridges: bridges.iter().map(|b| b.to_string()).collect(),
        }
    }

    #[test]
    fn least_loaded_host_that_passes_the_filters_wins() {
        let hosts = [
            host("a", 8, 16, 12 << 10, &["br0"]),
            host("b", 8, 16, 2 << 10, &["br0"]),
            host("c", 8, 64, 0, &[]),
        ];
        assert_eq!(place(&hosts, &req(2048, &["br0"])).unwrap().name, "b");
        // Without a bridge requirement the big empty host wins.
        assert_eq!(place(&hosts, &req(2048, &[])).unwrap().name, "c");
    }

    #[test]
    fn no_fit_names_every_host_and_its_reason() {
        let mut offline = host("d", 8, 16, 0, &["br0"]);
        offline.connected = false;
        let mut bmc_only = host("e", 64, 256, 0, &["br0"]);
        bmc_only.capabilities = vec![Capability::Bmc];
        let hosts = [
            host("a", 2, 4, 0, &["br0"]),
            host("c", 8, 64, 0, &[]),
            offline,
            bmc_only,
        ];
        let err = place(&hosts, &req(8192, &["br0"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no host fits the guest: a: needs 8192 MiB memory, 4096 MiB free; c: has no bridge `br0`; d: agent is not connected; e: its agent has no compute or storage driver (it runs without --driver libvirt)"
        );
        assert_eq!(
            place(&[], &req(1, &[])).unwrap_err().to_string(),
            "no host fits the guest: no hypervisor host is enrolled"
        );
    }

    #[test]
    fn vcpus_are_overcommitted_by_the_ratio_and_no_further() {
        let mut h = host("a", 2, 64, 0, &[]);
        h.vcpus_used = 7;
        assert!(
            place(
                std::slice::from_ref(&h),
                &Request {
                    vcpus: 1,
                    ..req(1, &[])
                }
            )
            .is_ok()
        );
        assert!(
            place(
                &[h],
                &Request {
                    vcpus: 2,
                    ..req(1, &[])
                }
            )
            .is_err()
        );
    }
}
