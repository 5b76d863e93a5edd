//! `ferric lab …`: racks of virtual bare metal on this machine (see the `ferric-lab` crate).

use super::Client;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ferric_lab::{Fault, Rack, UpOptions};
use std::path::{Path, PathBuf};

/// `ferric lab …`.
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build a rack: a network namespace with a provisioning bridge and, per node, a QEMU
    /// machine with a blank disk and an emulated BMC (nodes start powered off).
    Up {
        /// Nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Memory per node.
        #[arg(long, default_value = "1G", value_parser = super::parse_size)]
        memory: u64,
        /// Disk per node (a sparse file).
        #[arg(long, default_value = "4G", value_parser = super::parse_size)]
        disk: u64,
        /// `auto` (KVM when a probe shows it works), `kvm` or `tcg`.
        #[arg(long, default_value = "auto")]
        accel: String,
        /// Firmware, `uefi`, `bios` or `both` (UEFI with a compatibility module: the BMC's
        /// boot flags pick the mode; needs `--bmc ferric`); a list (`uefi,bios`) gives node i
        /// entry i and the rest the last. UEFI by default: what servers of today boot.
        #[arg(long, value_delimiter = ',', default_value = "uefi")]
        firmware: Vec<ferric_lab::Firmware>,
        /// Disk bus, `virtio`, `nvme` or `sata` (a list as for --firmware).
        #[arg(long, value_delimiter = ',', default_value = "virtio")]
        disk_bus: Vec<ferric_lab::DiskBus>,
        /// Disk sector size, 512 or 4096 bytes (a list as for --firmware).
        #[arg(long, value_delimiter = ',', default_value = "512")]
        sector_size: Vec<u32>,
        /// UEFI nodes' network boot: `pxe` (then HTTP) or `http` only (a list as for
        /// --firmware).
        #[arg(long, value_delimiter = ',', default_value = "pxe")]
        netboot: Vec<ferric_lab::NetBoot>,
        /// BMC: `openipmi` (OpenIPMI's ipmi_sim: IPMI cipher suite 3, a SEL, `/dev/ipmi0` in
        /// the machine), `ferric` (Ferric's IPMI BMC: cipher suites 17 and 3, boot flags kept
        /// whole and honoured) or `redfish` (Ferric's Redfish BMC: HTTPS with its own
        /// certificate, pinned in the address `status` shows; virtual media); a list as for
        /// --firmware.
        #[arg(long, value_delimiter = ',', default_value = "openipmi")]
        bmc: Vec<ferric_lab::BmcKind>,
    },
    /// Nodes, power, BMC address, MAC, faults and the console's last lines.
    Status,
    /// Print a node's serial console (what it wrote so far).
    Console {
        /// Node.
        node: String,
    },
    /// Remove the rack: every process, the namespace, bridge, taps, links and files.
    Down,
    /// Register the rack's nodes (BMC address and credentials, MAC) with a coordinator.
    Enroll {
        /// Agent that drives the BMCs (it must reach the rack's management network; an agent on
        /// this machine does).
        #[arg(long)]
        via: Option<String>,
    },
    /// Inject a fault: `bmc-silent`, `bmc-loss PCT`, `power-stuck`, `disk-fail`, `boot-stuck`, `net-down`, `clear`.
    Fault {
        /// Node.
        node: String,
        /// Fault.
        fault: String,
        /// Loss percentage for `bmc-loss`.
        pct: Option<u32>,
    },
    /// The rack's BMC relay (started by `up`; not for people).
    #[command(hide = true)]
    Relay {
        /// Rack directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// A node's Ferric BMC (started by `up` for `--bmc ferric`; not for people).
    #[command(hide = true)]
    Bmc {
        /// The node's directory in its rack.
        #[arg(long)]
        node_dir: PathBuf,
    },
    /// ipmi_sim's chassis-control program (not for people).
    #[command(hide = true)]
    Chassis {
        /// Rack directory.
        #[arg(long)]
        dir: PathBuf,
        /// Node.
        #[arg(long)]
        node: String,
        /// What ipmi_sim asks.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn rack_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// Runs a lab command for rack `name` under `root`.
pub async fn run(client: &Client, root: &Path, name: &str, cmd: LabCmd, json: bool) -> Result<()> {
    let dir = rack_dir(root, name);
    match cmd {
        LabCmd::Relay { dir } => {
            tokio::task::spawn_blocking(move || ferric_lab::relay(&dir)).await??;
        }
        LabCmd::Bmc { node_dir } => {
            tokio::task::spawn_blocking(move || ferric_lab::ferric_bmc::serve(&node_dir)).await??;
        }
        LabCmd::Chassis { dir, node, args } => {
            print!("{}", ferric_lab::chassis(&dir, &node, &args)?);
        }
        LabCmd::Up {
            nodes,
            memory,
            disk,
            accel,
            firmware,
            disk_bus,
            sector_size,
            netboot,
            bmc,
        } => {
            let started = std::time::Instant::now();
            let ferric = std::env::current_exe().context("cannot find the ferric binary")?;
            let name = name.to_owned();
            let rack = tokio::task::spawn_blocking(move || {
                ferric_lab::up(&UpOptions {
                    name,
                    dir,
                    nodes,
                    memory_mib: memory >> 20,
                    disk_bytes: disk,
                    accel,
                    ferric,
                    firmware,
                    disk_bus,
                    sector_size,
                    netboot,
                    bmc,
                })
            })
            .await??;
            if json {
                super::output::print_json(&ferric_lab::status(&rack))?;
                return Ok(());
            }
            println!(
                "rack {} up in {:.1} s: {} nodes ({}), BMCs on {}.0/24 via {}, provisioning bridge reached at {} ({})",
                rack.name,
                started.elapsed().as_secs_f64(),
                rack.nodes.len(),
                rack.accel,
                rack.mgmt_host_ip().trim_end_matches(".1"),
                rack.mgmt_veth(),
                rack.prov_host_ip(),
                rack.prov_veth()
            );
            let n0 = &rack.nodes[0];
            if n0.bmc == ferric_lab::BmcKind::Redfish {
                println!(
                    "power a node on: curl -k -u {}:… -H 'Content-Type: application/json' -d '{{\"ResetType\":\"On\"}}' https://{}/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                    ferric_lab::BMC_USER,
                    n0.bmc_ip
                );
            } else {
                println!(
                    "power a node on: ipmitool -I lanplus -C 3 -H {} -U {} -P … chassis power on",
                    n0.bmc_ip,
                    ferric_lab::BMC_USER
                );
            }
        }
        LabCmd::Status => {
            let rack = Rack::load(&dir)?;
            let st = ferric_lab::status(&rack);
            if json {
                super::output::print_json(&st)?;
                return Ok(());
            }
            for s in st {
                println!(
                    "{:<12} {} {:<11} power {:<3} boot {:<8} {} ({}{}) mac {}{}",
                    s.name,
                    s.firmware,
                    s.disk,
                    s.power,
                    s.boot,
                    s.bmc,
                    s.bmc_kind,
                    if s.bmc_up { ", up" } else { ", DOWN" },
                    s.mac,
                    if s.faults.is_empty() {
                        String::new()
                    } else {
                        format!(" faults: {}", s.faults.join(", "))
                    }
                );
                for l in s.console_tail {
                    println!("    | {l}");
                }
            }
        }
        LabCmd::Console { node } => {
            let rack = Rack::load(&dir)?;
            let n = rack.node(&node)?;
            let p = rack.node_dir(n).join("console.log");
            // As it is: firmware draws its menus in bytes that are not UTF-8.
            let bytes = std::fs::read(&p).unwrap_or_default();
            std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
        }
        LabCmd::Down => {
            tokio::task::spawn_blocking(move || ferric_lab::down(&dir)).await??;
            println!("rack {name} removed");
        }
        LabCmd::Enroll { via } => {
            let rack = Rack::load(&dir)?;
            for n in &rack.nodes {
                let body = ferric_api::bmcs::EnrollBmcNode {
                    name: n.name.clone(),
                    bmc: ferric_lab::bmc_address(&rack, n),
                    password: rack.bmc_password.clone(),
                    via: via.clone(),
                    macs: vec![n.mac.clone()],
                    // QEMU's serial console, on this host: the agent driving the BMCs tails
                    // it when it runs here too (and is allowed the rack's directory).
                    console_log: std::fs::canonicalize(rack.node_dir(n))
                        .ok()
                        .map(|d| d.join("console.log").display().to_string()),
                    boot_mode: Some(match n.firmware {
                        ferric_lab::Firmware::Uefi | ferric_lab::Firmware::Both => {
                            ferric_proto::hardware::BootMode::Uefi
                        }
                        ferric_lab::Firmware::Bios => ferric_proto::hardware::BootMode::Bios,
                    }),
                    efi_loader: None,
                    boot_via: None,
                };
                let v: ferric_api::bmcs::BmcView = client.post("/v1/nodes", &body).await?;
                if !json {
                    println!(
                        "{} enrolled: BMC {} via `{}`, MAC {}",
                        v.node, v.address, v.via, n.mac
                    );
                }
            }
        }
        LabCmd::Fault { node, fault, pct } => {
            let rack = Rack::load(&dir)?;
            let f = match (fault.as_str(), pct) {
                ("bmc-silent", None) => Fault::BmcSilent,
                ("boot-stuck", None) => Fault::BootStuck,
                ("net-down", None) => Fault::NetDown,
                ("bmc-loss", Some(p)) => Fault::BmcLoss(p),
                ("bmc-loss", None) => {
                    bail!("bmc-loss needs a percentage: ferric lab fault NODE bmc-loss 30")
                }
                ("power-stuck", None) => Fault::PowerStuck,
                ("disk-fail", None) => Fault::DiskFail,
                ("clear", None) => Fault::Clear,
                (other, _) => bail!(
                    "unknown fault `{other}` (bmc-silent, bmc-loss PCT, power-stuck, disk-fail, boot-stuck, net-down, clear)"
                ),
            };
            ferric_lab::fault(&rack, &node, &f)?;
            println!(
                "{node}: {fault}{}",
                pct.map_or(String::new(), |p| format!(" {p}%"))
            );
        }
    }
    Ok(())
}
