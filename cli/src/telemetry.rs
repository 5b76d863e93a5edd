//! `ferric telemetry …`: live samples of a host, or a bare-metal node's BMC reads.

use super::Client;

use anyhow::Result;
use clap::Subcommand;
use ferric_api::nodes::NodeDetail;
use std::time::Duration;

/// `ferric telemetry …`.
#[derive(Debug, Subcommand)]
pub enum TelemetryCmd {
    /// Print a node's samples as they arrive.
    Watch {
        /// Node name.
        node: String,
        /// Stop after this many samples.
        #[arg(long)]
        count: Option<usize>,
    },
}

/// `ferric telemetry watch`.
pub(super) async fn watch(
    client: &Client,
    node: &str,
    count: Option<usize>,
    json: bool,
) -> Result<()> {
    let detail: NodeDetail = client.get(&format!("/v1/nodes/{node}")).await?;
    if !detail.node.role.has_agent() {
        return watch_bmc(client, node, count, json).await;
    }
    let header = format!(
        "{:<20}  {:<14}  {:>5}  {:>13}  {:>5}  NET RX/TX KiB",
        "TIME", "NODE", "CPU%", "MEM MiB", "LOAD1"
    );
    follow(client, node, count, json, &header, |t| {
        let s = &t["sample"];
        let (rx, tx) = s["nics"].as_array().map_or((0, 0), |n| {
            n.iter().fold((0u64, 0u64), |(r, t), x| {
                (
                    r + x["rx_bytes"].as_u64().unwrap_or(0),
                    t + x["tx_bytes"].as_u64().unwrap_or(0),
                )
            })
        });
        format!(
            "{:<20}  {:<14}  {:>5.1}  {:>13}  {:>5.2}  {}/{}",
            received_at(t),
            node,
            s["cpu_percent"].as_f64().unwrap_or(0.0),
            format!(
                "{}/{}",
                s["mem_used_bytes"].as_u64().unwrap_or(0) >> 20,
                s["mem_total_bytes"].as_u64().unwrap_or(0) >> 20
            ),
            s["load1"].as_f64().unwrap_or(0.0),
            rx >> 10,
            tx >> 10
        )
    })
    .await
}

/// `ferric telemetry watch` of a bare-metal node: its BMC reads as the management agent polls.
async fn watch_bmc(client: &Client, node: &str, count: Option<usize>, json: bool) -> Result<()> {
    let header = format!(
        "{:<20}  {:<14}  {:<7}  SENSORS (BMC)",
        "TIME", "NODE", "POWER"
    );
    follow(client, node, count, json, &header, |r| {
        let b = &r["bmc"];
        let power = match b["power_on"].as_bool() {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        };
        let detail = match b["error"].as_str() {
            Some(e) => format!("error: {e}"),
            None => b["sensors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            format!(
                                "{} {} {}",
                                x["name"].as_str().unwrap_or("?"),
                                x["value"]
                                    .as_f64()
                                    .map_or("n/a".into(), |v| format!("{v:.2}")),
                                x["unit"].as_str().unwrap_or("")
                            )
                            .trim_end()
                            .to_owned()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        };
        format!(
            "{:<20}  {:<14}  {:<7}  {}",
            received_at(r),
            node,
            power,
            if detail.is_empty() { "-" } else { &detail }
        )
    })
    .await
}

/// Prints a node's telemetry records as they arrive, `count` of them at most: each as a JSON
/// line, or as the line `line` makes of it under `header`.
async fn follow(
    client: &Client,
    node: &str,
    count: Option<usize>,
    json: bool,
    header: &str,
    line: impl Fn(&serde_json::Value) -> String,
) -> Result<()> {
    let mut after = 0i64;
    let mut seen = 0usize;
    if !json {
        println!("{header}");
    }
    loop {
        let records: Vec<serde_json::Value> = client
            .get(&format!("/v1/nodes/{node}/telemetry?after_ms={after}"))
            .await?;
        for r in records {
            after = after.max(r["received_at_ms"].as_i64().unwrap_or(after));
            if json {
                super::output::print_record(&r)?;
            } else {
                println!("{}", line(&r));
            }
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// When the coordinator received a record, to the second.
fn received_at(r: &serde_json::Value) -> humantime::Rfc3339Timestamp {
    let secs = r["received_at_ms"].as_i64().unwrap_or(0) / 1000;
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs as u64))
}
