//! Per-guest telemetry: running state, CPU percent from CPU-time deltas, memory, disk and NIC
//! counters of the guests Ferric manages.

use super::xml::{disk_sources, target_devs};
use super::{Libvirt, METADATA_NS};
use crate::telemetry::GuestStats;
use ferric_proto::msg::GuestSample;
use std::time::Instant;
use virt::connect::Connect;

impl GuestStats for Libvirt {
    fn guests(&self) -> Vec<GuestSample> {
        let Ok(mut conn) = Connect::open(Some(&self.cfg.uri)) else {
            return Vec::new();
        };
        let domains = conn.list_all_domains(0).unwrap_or_default();
        let now = Instant::now();
        let mut prev = crate::lock(&self.cpu);
        let mut out = Vec::new();
        for d in domains {
            let Ok(xml) = d.get_xml_desc(0) else { continue };
            if !xml.contains(METADATA_NS) {
                continue;
            }
            let Ok(name) = d.get_name() else { continue };
            let Ok(info) = d.get_info() else { continue };
            let running = d.is_active().unwrap_or(false);
            let cpu_percent = match prev.insert(name.clone(), (info.cpu_time, now)) {
                Some((t0, i0)) if running && info.cpu_time >= t0 => {
                    let wall = now.duration_since(i0).as_nanos().max(1) as f64;
                    ((info.cpu_time - t0) as f64 / wall * 100.0) as f32
                }
                _ => 0.0,
            };
            let mut s = GuestSample {
                name,
                running,
                vcpus: info.nr_virt_cpu,
                memory_mib: info.max_mem / 1024,
                cpu_percent,
                mem_bytes: info.memory * 1024,
                block_rd_bytes: 0,
                block_wr_bytes: 0,
                net_rx_bytes: 0,
                net_tx_bytes: 0,
                missing_disks: Vec::new(),
                disk_sizes: Vec::new(),
            };
            for path in disk_sources(&xml) {
                if !std::path::Path::new(&path).exists() {
                    s.missing_disks.push(path);
                } else if let Ok(b) = d.get_block_info(&path, 0) {
                    s.disk_sizes.push((path, b.capacity));
                }
            }
            if running {
                for dev in target_devs(&xml, "disk") {
                    if let Ok(b) = d.get_block_stats(&dev) {
                        s.block_rd_bytes += b.rd_bytes.max(0) as u64;
                        s.block_wr_bytes += b.wr_bytes.max(0) as u64;
                    }
                }
                for dev in target_devs(&xml, "interface") {
                    if let Ok(n) = d.interface_stats(&dev) {
                        s.net_rx_bytes += n.rx_bytes.max(0) as u64;
                        s.net_tx_bytes += n.tx_bytes.max(0) as u64;
                    }
                }
            }
            out.push(s);
        }
        let _ = conn.close();
        out
    }
}
