//! `ferric guest …` and `ferric host …`: guests as desired state, hosts with their capacity.

use super::Client;
use super::output::{parse_size, print_item, print_list};

use anyhow::Result;
use clap::Subcommand;

/// `ferric guest …`.
#[derive(Debug, Subcommand)]
pub enum GuestCmd {
    /// Place a guest on a host and create it there.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory, e.g. `512M` or `2G`.
        #[arg(long, default_value = "512M", value_parser = parse_size)]
        memory: u64,
        /// Root disk, e.g. `10G`.
        #[arg(long, default_value = "10G", value_parser = parse_size)]
        disk: u64,
        /// Bridge for a NIC (repeat for several).
        #[arg(long = "net")]
        nets: Vec<String>,
        /// Boot this kernel (a path on the host) instead of the disk.
        #[arg(long, requires = "initrd")]
        kernel: Option<String>,
        /// Initrd for `--kernel`.
        #[arg(long, requires = "kernel")]
        initrd: Option<String>,
        /// Kernel command line for `--kernel`.
        #[arg(long, default_value = "console=ttyS0")]
        cmdline: String,
        /// Storage pool of the root volume on the host.
        #[arg(long, default_value = ferric_api::guests::ROOT_POOL)]
        pool: String,
        /// Image in the store to clone the root disk from (the guest boots from that disk
        /// unless --kernel is given).
        #[arg(long)]
        image: Option<String>,
    },
    /// List guests with desired and observed state.
    List,
    /// Show one guest.
    Show {
        /// Name.
        name: String,
    },
    /// Start a guest.
    Start {
        /// Name.
        name: String,
    },
    /// Shut a guest down (ACPI, then destroy after the host's grace period).
    Stop {
        /// Name.
        name: String,
    },
    /// Delete a guest and its root volume.
    Delete {
        /// Name.
        name: String,
    },
}

/// `ferric host …`.
#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List hypervisor hosts.
    List,
}

/// `ferric guest …`.
pub(super) async fn run(client: &Client, cmd: GuestCmd, json: bool) -> Result<()> {
    use ferric_api::guests::{CreateGuest, GuestAction, GuestView};
    let action: GuestAction = match cmd {
        GuestCmd::Create {
            name,
            vcpus,
            memory,
            disk,
            nets,
            kernel,
            initrd,
            cmdline,
            pool,
            image,
        } => {
            let boot = match (kernel, initrd) {
                (Some(kernel), Some(initrd)) => ferric_proto::plan::GuestBoot::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                },
                _ => ferric_proto::plan::GuestBoot::Disk,
            };
            let body = CreateGuest {
                name,
                vcpus,
                memory_mib: memory >> 20,
                disk_bytes: disk,
                nets,
                boot,
                pool,
                image,
            };
            client.post("/v1/guests", &body).await?
        }
        GuestCmd::List => {
            let guests: Vec<GuestView> = client.get("/v1/guests").await?;
            return print_list(
                json,
                &guests,
                &[
                    "GUEST", "HOST", "VCPUS", "MEM MiB", "DISK GiB", "DESIRED", "OBSERVED", "CPU%",
                    "DRIFT",
                ],
                |g| {
                    vec![
                        g.name.clone(),
                        g.host.clone(),
                        g.vcpus.to_string(),
                        g.memory_mib.to_string(),
                        (g.disk_bytes >> 30).to_string(),
                        g.desired.to_string(),
                        g.observed.to_string(),
                        g.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
                        if g.drift.is_empty() {
                            "-".into()
                        } else {
                            g.drift.join("; ")
                        },
                    ]
                },
            );
        }
        GuestCmd::Show { name } => {
            let g: GuestView = client.get(&format!("/v1/guests/{name}")).await?;
            return print_item(json, &g, |g| {
                format!(
                    "guest:    {}\nhost:     {}\nvcpus:    {}\nmemory:   {} MiB\ndisk:     {} GiB\ndesired:  {}\nobserved: {}\ndrift:    {}\nplan:     {}",
                    g.name,
                    g.host,
                    g.vcpus,
                    g.memory_mib,
                    g.disk_bytes >> 30,
                    g.desired,
                    g.observed,
                    if g.drift.is_empty() {
                        "none".into()
                    } else {
                        g.drift.join("; ")
                    },
                    g.last_plan.map_or("-".into(), |p| p.to_string())
                )
            });
        }
        GuestCmd::Start { name } => {
            client
                .post(&format!("/v1/guests/{name}/start"), &serde_json::json!({}))
                .await?
        }
        GuestCmd::Stop { name } => {
            client
                .post(&format!("/v1/guests/{name}/stop"), &serde_json::json!({}))
                .await?
        }
        GuestCmd::Delete { name } => client.delete(&format!("/v1/guests/{name}")).await?,
    };
    print_item(json, &action, |a| {
        format!(
            "guest {} on {}: plan {} pushed (ferric plan status {} --wait 2m)",
            a.guest, a.host, a.plan, a.plan
        )
    })
}

/// `ferric host list`.
pub(super) async fn hosts(client: &Client, json: bool) -> Result<()> {
    let hosts: Vec<ferric_api::guests::HostView> = client.get("/v1/hosts").await?;
    print_list(
        json,
        &hosts,
        &[
            "HOST",
            "LINK",
            "VCPUS USED/MAX",
            "MEM MiB USED/TOTAL",
            "DISK GiB USED/FREE",
            "GUESTS",
        ],
        |h| {
            vec![
                h.name.clone(),
                if h.connected {
                    "connected".into()
                } else {
                    "offline".into()
                },
                format!(
                    "{}/{}",
                    h.vcpus_used,
                    (f64::from(h.cpus) * ferric_api::guests::CPU_ALLOCATION_RATIO) as u64
                ),
                format!("{}/{}", h.mem_used_mib, h.mem_total_mib),
                format!("{}/{}", h.disk_used_bytes >> 30, h.disk_free_bytes >> 30),
                h.guests.to_string(),
            ]
        },
    )
}
