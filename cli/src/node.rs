//! `ferric node …`: enrolled nodes, and bare-metal nodes' BMC actions.

use super::Client;
use super::output::{ago, print_item, print_json, print_list, table};
use super::wait::{plan_output, wait_plan};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ferric_api::model::{BootVia, EfiLoader};
use ferric_api::nodes::{NodeDetail, NodeView};
use ferric_proto::hardware::BootMode;
use ferric_proto::plan::{BootDevice, PowerAction};
use std::path::PathBuf;
use std::time::Duration;

/// `ferric node …`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    List,
    /// Show one node.
    Show {
        /// Node name.
        name: String,
    },
    /// Enroll a bare-metal node by its BMC. The password comes from --password-file,
    /// --password-env, or a prompt (or one line on standard input when it is not a terminal).
    Enroll {
        /// Node name (a DNS label).
        name: String,
        /// BMC address: `ipmi://USER@HOST[:PORT][?suite=17|3]`, or
        /// `redfish://USER@HOST[:PORT][?system=ID][&pin=sha256:HEX]` (the BMC's certificate
        /// pinned, unless the agents have a CA bundle for BMCs; see --trust-first-use), or
        /// `redfish+http://…` for an emulator.
        #[arg(long)]
        bmc: String,
        /// For a `redfish://` BMC without a pin: read the certificate the BMC presents now and
        /// pin it (trust on first use — check the fingerprint printed against the BMC's own).
        #[arg(long)]
        trust_first_use: bool,
        /// Agent that reaches the BMC (needed when several are enrolled).
        #[arg(long)]
        via: Option<String>,
        /// Read the password from this file (first line).
        #[arg(long, conflicts_with = "password_env")]
        password_file: Option<PathBuf>,
        /// Read the password from this environment variable.
        #[arg(long)]
        password_env: Option<String>,
        /// MAC address of a NIC of the node (repeat for several).
        #[arg(long = "mac")]
        macs: Vec<String>,
        /// The node's serial console log on the --via agent's host (absolute; within the
        /// agent's --allow-path directories): the agent tails it for `ferric node console`
        /// and the dashboard.
        #[arg(long)]
        console_log: Option<String>,
        /// How its firmware boots: `uefi` (the default: servers of today) or `bios`. Every
        /// boot device asked of its BMC says it; an inspection confirms it.
        #[arg(long, value_parser = by_name(&[BootMode::Uefi, BootMode::Bios], BootMode::as_str))]
        boot_mode: Option<BootMode>,
        /// The iPXE its UEFI firmware network-boots: `snponly` (the default: the firmware's
        /// own NIC driver) or `ipxe` (iPXE's drivers).
        #[arg(long, value_parser = by_name(EfiLoader::ALL, EfiLoader::as_str))]
        efi_loader: Option<EfiLoader>,
        /// How it boots the deploy ramdisk: `network` (the default: PXE or UEFI HTTP) or
        /// `media` (its Redfish BMC's virtual media: an ISO the coordinator makes; for networks
        /// without DHCP, give its boot port an address with `ferric node network`).
        #[arg(long, value_parser = by_name(BootVia::ALL, BootVia::as_str))]
        boot_via: Option<BootVia>,
    },
    /// Change how a bare-metal node boots: its firmware's mode, and the iPXE its UEFI firmware
    /// network-boots.
    Boot {
        /// Node name.
        name: String,
        /// `uefi` or `bios`.
        #[arg(long, value_parser = by_name(&[BootMode::Uefi, BootMode::Bios], BootMode::as_str))]
        mode: Option<BootMode>,
        /// `snponly` or `ipxe`.
        #[arg(long, value_parser = by_name(EfiLoader::ALL, EfiLoader::as_str))]
        efi_loader: Option<EfiLoader>,
        /// How it boots the deploy ramdisk: `network` or `media` (virtual media).
        #[arg(long, value_parser = by_name(BootVia::ALL, BootVia::as_str))]
        via: Option<BootVia>,
    },
    /// Show the network a deploy's config drive gives a bare-metal node's OS (ports by MAC with
    /// addresses, VLANs and bonds; routes; DNS), or replace it with a JSON document.
    Network {
        /// Node name.
        name: String,
        /// Replace the network with this JSON document (as `--json` prints it).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Set one port of a bare-metal node's network: its addresses, VLANs, bond and MTU, and
    /// the node's gateway and name servers.
    Port(super::network::PortArgs),
    /// Power a bare-metal node on, off, cycle, reset, soft (ACPI) off, or read its status.
    Power {
        /// Action.
        #[arg(value_parser = by_name(PowerAction::ALL, PowerAction::as_str))]
        action: PowerAction,
        /// Node name.
        name: String,
        /// Return once the plan is pushed instead of waiting for the result.
        #[arg(long)]
        no_wait: bool,
    },
    /// Set a bare-metal node's next boot device.
    Bootdev {
        /// Node name.
        name: String,
        /// Device.
        #[arg(value_parser = by_name(BootDevice::ALL, BootDevice::as_str))]
        device: BootDevice,
        /// For every boot, not just the next one.
        #[arg(long)]
        persistent: bool,
        /// UEFI boot (legacy BIOS otherwise).
        #[arg(long)]
        uefi: bool,
    },
    /// Read every sensor of a bare-metal node's BMC.
    Sensors {
        /// Node name.
        name: String,
    },
    /// What a bare-metal node's Redfish BMC knows of the machine without booting it:
    /// processors, memory, drives, NICs with their MACs, the system's identity.
    Inventory {
        /// Node name.
        name: String,
    },
    /// Read a bare-metal node's System Event Log (hardware events the BMC logged).
    Sel {
        /// Node name.
        name: String,
        /// Clear the log once it has been read.
        #[arg(long)]
        clear: bool,
    },
    /// Print a bare-metal node's serial console as the driving agent tails it (the newest
    /// lines the coordinator holds); with --follow, go on printing lines as they come.
    Console {
        /// Node name.
        name: String,
        /// How many of the newest lines to print first.
        #[arg(long, short = 'n', default_value_t = 40)]
        lines: usize,
        /// Keep printing new lines until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Forget a node — an agent, a bare-metal node, a discovered one — with its plans, boots
    /// and inspection (the machine itself is not touched; its certificates are refused from
    /// now on).
    Delete {
        /// Node name.
        name: String,
    },
    /// Revoke a node's certificates: its agent is disconnected and refused at every
    /// handshake from now on (a bare-metal node's next ramdisk gets a new certificate).
    Revoke {
        /// Node name.
        name: String,
    },
    /// Take bare-metal nodes under management (their BMC is checked), or recover them from
    /// a failed state.
    Manage {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        wait: super::provision::WaitArgs,
    },
    /// Boot bare-metal nodes into the ramdisk and read their hardware.
    Inspect {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        wait: super::provision::WaitArgs,
    },
    /// Clean bare-metal nodes (erase their disks) and make them available.
    Provide {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
        /// How to erase: metadata (partition tables and signatures), discard, zero.
        #[arg(long)]
        erase: Option<ferric_proto::plan::EraseMode>,
        #[command(flatten)]
        wait: super::provision::WaitArgs,
    },
    /// Write an image to available bare-metal nodes (all at once) and boot it.
    Deploy {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        deploy: super::provision::DeployArgs,
        #[command(flatten)]
        wait: super::provision::WaitArgs,
    },
    /// Take deployed nodes back: network boot, clean, available.
    Undeploy {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        wait: super::provision::WaitArgs,
    },
    /// Write a deployed node's image again (or another one with --image).
    Rebuild {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Another image.
        #[arg(long)]
        image: Option<String>,
        #[command(flatten)]
        wait: super::provision::WaitArgs,
    },
    /// Stop what bare-metal nodes are doing; they land in the failed state of it.
    Abort {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Wait until bare-metal nodes reach a provision state (failing when one fails).
    Wait {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
        /// The state (`manageable`, `available`, `active`, …).
        #[arg(long)]
        state: ferric_api::model::ProvisionState,
        /// Give up after this long.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

impl NodeCmd {
    /// Whether this is a lifecycle verb (or waiting for one).
    pub(super) fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            NodeCmd::Manage { .. }
                | NodeCmd::Inspect { .. }
                | NodeCmd::Provide { .. }
                | NodeCmd::Deploy { .. }
                | NodeCmd::Undeploy { .. }
                | NodeCmd::Rebuild { .. }
                | NodeCmd::Abort { .. }
                | NodeCmd::Wait { .. }
        )
    }
}

pub(super) async fn lifecycle_cmd(client: &Client, cmd: NodeCmd, json: bool) -> Result<()> {
    use super::provision::{verb, wait};
    use ferric_api::model::Verb;
    let now = super::provision::WaitArgs {
        wait: false,
        timeout: Duration::ZERO,
    };
    match cmd {
        NodeCmd::Manage { names, wait: w } => {
            verb(client, Verb::Manage, &names, None, None, &w, json).await
        }
        NodeCmd::Inspect { names, wait: w } => {
            verb(client, Verb::Inspect, &names, None, None, &w, json).await
        }
        NodeCmd::Provide {
            names,
            erase,
            wait: w,
        } => verb(client, Verb::Provide, &names, erase, None, &w, json).await,
        NodeCmd::Deploy {
            names,
            deploy,
            wait: w,
        } => verb(client, Verb::Deploy, &names, None, Some(&deploy), &w, json).await,
        NodeCmd::Undeploy { names, wait: w } => {
            verb(client, Verb::Undeploy, &names, None, None, &w, json).await
        }
        NodeCmd::Rebuild {
            names,
            image,
            wait: w,
        } => match image {
            Some(image) => {
                let d = super::provision::DeployArgs {
                    image: Some(image),
                    image_url: None,
                    checksum: None,
                    image_format: None,
                    config_drive: None,
                    ssh_key: vec![],
                    hostname: None,
                    user_data: None,
                    config_drive_format: "nocloud".into(),
                    no_config_drive: false,
                    root_device: vec![],
                };
                verb(client, Verb::Rebuild, &names, None, Some(&d), &w, json).await
            }
            None => verb(client, Verb::Rebuild, &names, None, None, &w, json).await,
        },
        NodeCmd::Abort { names } => verb(client, Verb::Abort, &names, None, None, &now, json).await,
        NodeCmd::Wait {
            names,
            state,
            timeout,
        } => wait(client, &names, state, timeout, json).await,
        _ => bail!("not a lifecycle command"),
    }
}

/// Where a node's boot mode comes from: an inspection that saw it, or its enrollment.
fn boot_mode_source(b: &ferric_api::bmcs::BmcView) -> String {
    match b.boot_mode_seen_at_ms {
        Some(at) => format!("seen by inspection {}", ago(Some(at))),
        None => "as enrolled or set; not yet inspected".into(),
    }
}

/// Parses a protocol enum by the stable names `name` gives its values (`--help` lists them).
fn by_name<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(all.iter().map(|&v| name(v))).map(move |s| {
        all.iter()
            .copied()
            .find(|&v| name(v) == s)
            .expect("clap accepts only the possible values")
    })
}

/// How long the CLI waits for a BMC plan.
pub(super) const BMC_WAIT: Duration = Duration::from_secs(180);

fn read_password(file: Option<&std::path::Path>, env: Option<&str>) -> Result<String> {
    let pw = if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?;
        text.lines().next().unwrap_or("").to_owned()
    } else if let Some(var) = env {
        std::env::var(var)
            .with_context(|| format!("environment variable {var} holds no password"))?
    } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        rpassword::prompt_password("BMC password: ").context("cannot read the password")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if pw.is_empty() {
        bail!("the BMC password is empty");
    }
    Ok(pw)
}

pub(super) async fn bmc_cmd(client: &Client, cmd: NodeCmd, json: bool) -> Result<()> {
    use ferric_api::bmcs::{BmcAction, BmcView, BootdevRequest, EnrollBmcNode, PowerRequest};
    match cmd {
        NodeCmd::Enroll {
            name,
            bmc,
            via,
            password_file,
            password_env,
            macs,
            console_log,
            boot_mode,
            efi_loader,
            boot_via,
            trust_first_use,
        } => {
            // Catch a malformed address before asking for a password.
            let mut addr =
                ferric_proto::msg::BmcAddress::parse(&bmc).map_err(|e| anyhow::anyhow!(e))?;
            let bmc = if trust_first_use {
                if addr.scheme != ferric_proto::msg::BmcScheme::Redfish {
                    bail!(
                        "--trust-first-use pins a redfish:// BMC's certificate; `{bmc}` is not one"
                    );
                }
                if addr.pin.is_some() {
                    bail!("`{bmc}` pins a certificate already; leave out --trust-first-use");
                }
                let fp = ferric_redfish::trust::first_use(&addr.host, addr.port)
                    .await
                    .with_context(|| {
                        format!("cannot read the certificate of {}:{}", addr.host, addr.port)
                    })?;
                eprintln!(
                    "pinned the certificate the BMC presents now: {} — check it against the BMC's own",
                    ferric_proto::msg::fingerprint_text(&fp)
                );
                addr.pin = Some(fp);
                addr.to_string()
            } else {
                bmc
            };
            let password = read_password(password_file.as_deref(), password_env.as_deref())?;
            let v: BmcView = client
                .post(
                    "/v1/nodes",
                    &EnrollBmcNode {
                        name,
                        bmc,
                        password,
                        via,
                        macs,
                        console_log,
                        boot_mode,
                        efi_loader,
                        boot_via,
                    },
                )
                .await?;
            print_item(json, &v, |v| {
                format!(
                    "node {} enrolled: BMC {} driven by agent `{}`",
                    v.node, v.address, v.via
                )
            })?;
        }
        NodeCmd::Boot {
            name,
            mode,
            efi_loader,
            via,
        } => {
            if mode.is_none() && efi_loader.is_none() && via.is_none() {
                bail!(
                    "say what to change: --mode uefi|bios, --efi-loader snponly|ipxe, --via network|media"
                );
            }
            let v: BmcView = client
                .patch(
                    &format!("/v1/nodes/{name}/bmc"),
                    &ferric_api::bmcs::BootSettings {
                        boot_mode: mode,
                        efi_loader,
                        boot_via: via,
                    },
                )
                .await?;
            print_item(json, &v, |v| {
                format!(
                    "node {}: boots {} ({}), UEFI loader {}, ramdisk from the {}",
                    v.node,
                    v.boot_mode,
                    boot_mode_source(v),
                    v.efi_loader,
                    v.boot_via
                )
            })?;
        }
        NodeCmd::Power {
            action,
            name,
            no_wait,
        } => {
            let a: BmcAction = client
                .post(&format!("/v1/nodes/{name}/power"), &PowerRequest { action })
                .await?;
            if no_wait {
                println!(
                    "node {name}: plan {} pushed to `{}` (ferric plan status {} --wait 2m)",
                    a.plan, a.via, a.plan
                );
                return Ok(());
            }
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            if json {
                return print_json(&status);
            }
            let on = plan_output(&status)
                .and_then(|o| o["power"]["on"].as_bool())
                .context("the plan finished without reporting the power state")?;
            println!("node {name}: power {}", if on { "on" } else { "off" });
        }
        NodeCmd::Bootdev {
            name,
            device,
            persistent,
            uefi,
        } => {
            let a: BmcAction = client
                .post(
                    &format!("/v1/nodes/{name}/bootdev"),
                    &BootdevRequest {
                        device,
                        persistent,
                        uefi,
                    },
                )
                .await?;
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            if json {
                return print_json(&status);
            }
            println!(
                "node {name}: next boot from {}{}{}",
                device.as_str(),
                if persistent { ", persistent" } else { ", once" },
                if uefi { ", UEFI" } else { "" }
            );
        }
        NodeCmd::Console {
            name,
            lines,
            follow,
        } => console(client, &name, lines, follow, json).await?,
        NodeCmd::Sensors { name } => {
            let a: BmcAction = client
                .post(&format!("/v1/nodes/{name}/sensors"), &serde_json::json!({}))
                .await?;
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            let readings = plan_output(&status)
                .and_then(|o| o.get("sensors").cloned())
                .context("the plan finished without sensor readings")?;
            if json {
                return print_json(&readings);
            }
            let readings = readings.as_array().cloned().unwrap_or_default();
            if readings.is_empty() {
                println!("node {name}: the BMC reports no sensors");
                return Ok(());
            }
            let rows = table(&["SENSOR", "TYPE", "VALUE", "UNIT"], &readings, |r| {
                vec![
                    r["name"].as_str().unwrap_or("").to_owned(),
                    r["kind"].as_str().unwrap_or("").to_owned(),
                    r["value"]
                        .as_f64()
                        .map_or("n/a".into(), |v| format!("{v:.2}")),
                    r["unit"].as_str().unwrap_or("").to_owned(),
                ]
            });
            println!("{rows}");
        }
        NodeCmd::Inventory { name } => {
            let a: BmcAction = client
                .post(
                    &format!("/v1/nodes/{name}/inventory"),
                    &serde_json::json!({}),
                )
                .await?;
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            let inv = plan_output(&status)
                .and_then(|o| o.get("bmc_inventory").cloned())
                .context("the plan finished without the inventory")?;
            if json {
                return print_json(&inv);
            }
            let dmi = &inv["dmi"];
            println!(
                "system:  {} {} (serial {})",
                dmi["vendor"].as_str().unwrap_or(""),
                dmi["product"].as_str().unwrap_or(""),
                dmi["serial"].as_str().unwrap_or("")
            );
            println!(
                "cpus:    {} × {}",
                inv["cpu"]["count"],
                inv["cpu"]["model"].as_str().unwrap_or("")
            );
            println!(
                "memory:  {} MiB",
                inv["memory_bytes"].as_u64().unwrap_or(0) >> 20
            );
            for d in inv["disks"].as_array().into_iter().flatten() {
                println!(
                    "disk:    {} {} GB {}",
                    d["name"].as_str().unwrap_or(""),
                    d["size_bytes"].as_u64().unwrap_or(0) / 1_000_000_000,
                    d["model"].as_str().unwrap_or("")
                );
            }
            for n in inv["nics"].as_array().into_iter().flatten() {
                println!(
                    "nic:     {} {}{}",
                    n["name"].as_str().unwrap_or(""),
                    n["mac"].as_str().unwrap_or(""),
                    if n["link_up"] == true {
                        " (link up)"
                    } else {
                        ""
                    }
                );
            }
        }
        NodeCmd::Sel { name, clear } => {
            let a: BmcAction = client
                .post(
                    &format!("/v1/nodes/{name}/sel"),
                    &ferric_api::bmcs::SelRequest { clear },
                )
                .await?;
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            // Every entry either step read (the clearing step's read may hold newer ones).
            let mut list: Vec<serde_json::Value> = Vec::new();
            let outputs: Vec<&serde_json::Value> = status["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["kind"]["output"].get("sel"))
                        .collect()
                })
                .unwrap_or_default();
            if outputs.is_empty() {
                bail!("the plan finished without the event log");
            }
            // The same entry in both reads is one (compared whole: a Redfish BMC's entries
            // have no raw record bytes).
            for e in outputs.iter().filter_map(|o| o.as_array()).flatten() {
                if !list.contains(e) {
                    list.push(e.clone());
                }
            }
            if json {
                return print_json(&list);
            }
            let rows = table(
                &["ID", "TIME", "SENSOR", "EVENT", "DIRECTION"],
                &list,
                |e| {
                    vec![
                        e["id"].to_string(),
                        e["at_s"].as_u64().map_or("-".into(), |t| {
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + Duration::from_secs(t),
                            )
                            .to_string()
                        }),
                        format!(
                            "{} #0x{:02x}",
                            e["sensor"].as_str().unwrap_or(""),
                            e["sensor_number"].as_u64().unwrap_or(0)
                        ),
                        e["event"].as_str().unwrap_or("").to_owned(),
                        if e["asserted"] == true {
                            "Asserted"
                        } else {
                            "Deasserted"
                        }
                        .to_owned(),
                    ]
                },
            );
            println!("{rows}");
            if clear {
                println!(
                    "node {name}: event log cleared ({} entries read)",
                    list.len()
                );
            }
        }
        NodeCmd::Delete { name } => {
            let v: ferric_api::nodes::DeletedNode =
                client.delete(&format!("/v1/nodes/{name}")).await?;
            print_item(json, &v, |v| {
                let mut out = format!("node {name} deleted with {} plans", v.plans);
                if let Some(b) = &v.bmc {
                    out.push_str(&format!("; BMC {} is no longer driven", b.address));
                }
                if !v.guests.is_empty() {
                    out.push_str(&format!(
                        "; guests {} left the inventory (still on the host)",
                        v.guests.join(", ")
                    ));
                }
                out
            })?;
        }
        NodeCmd::Revoke { name } => {
            let r: ferric_api::access::Revoked = client
                .post(&format!("/v1/nodes/{name}/revoke"), &())
                .await?;
            print_item(json, &r, |r| {
                format!(
                    "node {} revoked: certificates before generation {} are refused{}",
                    r.node,
                    r.cert_generation,
                    if r.disconnected {
                        "; its agent was disconnected"
                    } else {
                        ""
                    }
                )
            })?;
        }
        _ => bail!("not a BMC command"),
    }
    Ok(())
}

/// `ferric node list`.
pub(super) async fn list(client: &Client, json: bool) -> Result<()> {
    let nodes: Vec<NodeView> = client.get("/v1/nodes").await?;
    print_list(
        json,
        &nodes,
        &[
            "NAME",
            "ROLE",
            "LINK",
            "LAST SEEN",
            "CAPABILITIES",
            "STATE",
            "POWER",
        ],
        |n| {
            vec![
                n.name.clone(),
                n.role.to_string(),
                if !n.role.has_agent() && n.connected {
                    "ramdisk".into() // its deploy ramdisk is connected
                } else if !n.role.has_agent() {
                    "-".into() // reached through its BMC, not a link of its own
                } else if n.connected {
                    "connected".into()
                } else {
                    "offline".into()
                },
                if !n.role.has_agent() && !n.connected && n.last_seen_ms.is_none() {
                    "-".into()
                } else {
                    ago(n.last_seen_ms)
                },
                join(&n.capabilities, ","),
                n.state.map_or(String::new(), |st| st.to_string()),
                match (&n.power, &n.flag) {
                    (Some(p), Some(_)) => format!("{p} (flagged)"),
                    (Some(p), None) => p.clone(),
                    (None, _) => String::new(),
                },
            ]
        },
    )
}

/// `ferric node show`.
pub(super) async fn show(client: &Client, name: &str, json: bool) -> Result<()> {
    let d: NodeDetail = client.get(&format!("/v1/nodes/{name}")).await?;
    if json {
        return print_json(&d);
    }
    println!("name:         {}", d.node.name);
    println!("role:         {}", d.node.role);
    match (&d.lifecycle, d.node.state) {
        (Some(l), _) => {
            let now = crate::output::now_ms();
            let secs = |ms: i64| {
                humantime::format_duration(Duration::from_secs((ms.max(0) / 1000) as u64))
            };
            println!("state:        {} (for {})", l.state, secs(now - l.since_ms));
            if let Some(doing) = &l.doing {
                let mut line = doing.clone();
                if let Some(p) = &l.progress {
                    line.push_str(&format!(" — {}", super::provision::progress(p)));
                }
                if let Some(dl) = l.deadline_ms {
                    line.push_str(&format!(" (fails in {} unless done)", secs(dl - now)));
                }
                println!("step:         {line}");
            }
            if let Some(img) = &l.image {
                println!("image:        {img}");
            }
            if let Some(e) = &l.error {
                println!("last error:   {e} ({})", ago(l.error_at_ms));
            }
        }
        (None, Some(st)) => println!("state:        {st}"),
        (None, None) => {}
    }
    println!(
        "link:         {}",
        if d.node.connected {
            "connected"
        } else {
            "offline"
        }
    );
    println!("last seen:    {}", ago(d.node.last_seen_ms));
    println!("capabilities: {}", join(&d.node.capabilities, ", "));
    if let Some(b) = &d.bmc {
        println!("bmc:          {} (via agent `{}`)", b.address, b.via);
        println!(
            "boot:         {} ({}), UEFI loader {}, ramdisk from the {}",
            b.boot_mode,
            boot_mode_source(b),
            b.efi_loader,
            b.boot_via
        );
        if b.failing {
            println!(
                "power:        unknown — the BMC's reads fail ({})",
                match (&b.power_observed, b.observed_at_ms) {
                    (Some(p), at @ Some(_)) => format!("last read {p}, {}", ago(at)),
                    _ => "never read".into(),
                }
            );
        } else {
            println!(
                "power:        {} (Ferric left it {}; read {})",
                b.power_observed.as_deref().unwrap_or("unknown"),
                b.power_expected.as_deref().unwrap_or("-"),
                ago(b.observed_at_ms)
            );
        }
        if let Some(f) = &b.flag {
            println!("FLAG:         {f}");
        }
        if let Some(e) = &b.last_error {
            println!("last error:   {e} ({})", ago(b.error_at_ms));
        }
        for r in &b.sensors {
            println!(
                "sensor:       {:<16} {:>10} {}",
                r.name,
                r.value.map_or("n/a".into(), |v| format!("{v:.2}")),
                r.unit
            );
        }
    }
    if let Some(t) = &d.telemetry {
        let s = &t.sample;
        println!(
            "telemetry:    cpu {:.1}%  mem {}/{} MiB  load {:.2}",
            s.cpu_percent,
            s.mem_used_bytes >> 20,
            s.mem_total_bytes >> 20,
            s.load1
        );
    }
    // The latest network boot: from its last DHCP answer (or script) on.
    if let Some(start) = d
        .boot
        .iter()
        .rposition(|m| m.stage == ferric_api::model::BootStage::Dhcp)
        .or_else(|| {
            d.boot
                .iter()
                .rposition(|m| m.stage == ferric_api::model::BootStage::Script)
        })
    {
        let t0 = d.boot[start].at_ms;
        let steps: Vec<String> = d.boot[start..]
            .iter()
            .map(|m| format!("{} +{:.1}s", m.stage, (m.at_ms - t0) as f64 / 1000.0))
            .collect();
        println!("last boot:    {} ({})", steps.join(", "), ago(Some(t0)));
    }
    if let Some(i) = &d.inspection {
        let inv = &i.inventory;
        println!(
            "inspected:    {} — {} × {}, {} MiB memory",
            ago(d.inspected_at_ms),
            inv.cpu.count,
            if inv.cpu.model.is_empty() {
                "CPU"
            } else {
                &inv.cpu.model
            },
            inv.memory_bytes >> 20
        );
        for disk in &inv.disks {
            println!(
                "disk:         {:<10} {:>10}  {}{}{}",
                disk.name,
                super::output::human_bytes(disk.size_bytes),
                if disk.rotational {
                    "rotational"
                } else {
                    "solid-state"
                },
                if disk.model.is_empty() {
                    String::new()
                } else {
                    format!("  {}", disk.model)
                },
                if disk.serial.is_empty() {
                    String::new()
                } else {
                    format!("  serial {}", disk.serial)
                },
            );
        }
        for n in &inv.nics {
            println!(
                "nic:          {:<10} {}  {}{}",
                n.name,
                n.mac,
                if n.link_up { "link up" } else { "no link" },
                n.speed_mbps
                    .map_or(String::new(), |s| format!(", {s} Mb/s")),
            );
        }
        if !inv.dmi.vendor.is_empty() || !inv.dmi.product.is_empty() {
            let ids: Vec<String> = [("serial", &inv.dmi.serial), ("uuid", &inv.dmi.uuid)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let ids = if ids.is_empty() {
                String::new()
            } else {
                format!(" ({})", ids.join(", "))
            };
            println!("system:       {} {}{ids}", inv.dmi.vendor, inv.dmi.product);
        }
        match (&i.bmc, &i.bmc_error) {
            (Some(b), _) if b.ip == "0.0.0.0" => {
                println!("bmc lan:      no address configured on the BMC's LAN channel")
            }
            (Some(b), _) => println!("bmc lan:      {} {}", b.ip, b.mac),
            (None, Some(e)) => println!("bmc lan:      not read ({e})"),
            (None, None) => {}
        }
    }
    if let Some(l) = d.lifecycle.as_ref().filter(|l| !l.transitions.is_empty()) {
        let t = table(
            &["WHEN", "FROM", "TO", "STEP", "CAUSE"],
            &l.transitions,
            |t| {
                vec![
                    ago(Some(t.at_ms)),
                    t.from.clone(),
                    t.to.clone(),
                    t.step.clone().unwrap_or_default(),
                    match &t.error {
                        Some(e) => format!("{}: {e}", t.cause),
                        None => t.cause.clone(),
                    },
                ]
            },
        );
        println!("\n{t}");
    }
    let plans = table(&["PLAN", "STATE", "STEPS"], &d.plans, |p| {
        vec![
            p.id.to_string(),
            p.state.to_string(),
            p.steps.len().to_string(),
        ]
    });
    println!("\n{plans}");
    Ok(())
}

fn join(caps: &[ferric_proto::msg::Capability], sep: &str) -> String {
    caps.iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(sep)
}

/// `ferric node console`: the newest `lines`, then (with `follow`) new ones as they come; as
/// JSON, one line record per output line.
async fn console(
    client: &Client,
    name: &str,
    lines: usize,
    follow: bool,
    json: bool,
) -> Result<()> {
    use ferric_api::records::ConsoleTail;
    let bmc: ferric_api::bmcs::BmcView = client.get(&format!("/v1/nodes/{name}/bmc")).await?;
    if bmc.console_log.is_none() {
        bail!(
            "node `{name}` has no console log (enroll it with --console-log PATH on agent `{}`)",
            bmc.via
        );
    }
    let mut after: Option<u64> = None;
    let mut said_error: Option<String> = None;
    let mut epoch: Option<i64> = None;
    loop {
        let q = match after {
            None => format!("/v1/nodes/{name}/console?limit={lines}"),
            Some(a) => format!("/v1/nodes/{name}/console?after={a}&limit=1000"),
        };
        let mut t: ConsoleTail = client.get(&q).await?;
        if epoch.is_some_and(|e| e != t.epoch_ms) {
            // The coordinator restarted and numbers its lines anew: all it holds is new.
            t = client
                .get(&format!("/v1/nodes/{name}/console?limit=1000"))
                .await?;
        }
        epoch = Some(t.epoch_ms);
        if t.error.is_some() && t.error != said_error {
            eprintln!(
                "node {name}: agent `{}` cannot read the console log: {}",
                bmc.via,
                t.error.as_deref().unwrap_or_default()
            );
        }
        said_error = t.error.clone();
        for l in &t.lines {
            if json {
                super::output::print_record(l)?;
            } else {
                println!("{}", l.text);
            }
        }
        if !follow {
            return Ok(());
        }
        // From now on only what is new.
        after = t.last_seq.or(after).or(Some(0));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
