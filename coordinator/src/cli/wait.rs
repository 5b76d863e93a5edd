//! The command line's use of the API client: waiting for plans, and upload progress.

use super::output::{describe_event, human_bytes};
use anyhow::{Result, bail};
use ferric_coordinator::client::Client;
use ferric_coordinator::model::PlanState;
use std::time::Duration;

/// Uploads an image, showing progress on a terminal.
pub(super) async fn upload_image(
    client: &Client,
    file: &std::path::Path,
    name: &str,
    format: Option<&str>,
    checksum: Option<&str>,
) -> Result<ferric_coordinator::conductor::images::ImageView> {
    use std::io::IsTerminal;
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = std::time::Instant::now();
    let label = file.display().to_string();
    let progress = move |sent: u64, total: u64| {
        if tty && (shown.elapsed().as_millis() >= 200 || sent == total) {
            shown = std::time::Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let rate = sent as f64 / secs;
            let eta = (total.saturating_sub(sent)) as f64 / rate.max(1.0);
            eprint!(
                "\r{label}: {} / {} ({:.0}%), {}/s, ETA {:.0}s   ",
                human_bytes(sent),
                human_bytes(total),
                sent as f64 * 100.0 / (total.max(1) as f64),
                human_bytes(rate as u64),
                eta
            );
            if sent == total {
                eprintln!();
            }
        }
    };
    Ok(client
        .upload_image(file, name, format, checksum, progress)
        .await?)
}

/// The state of a plan as the API shows it (`GET /v1/plans/{id}`).
pub(super) fn plan_state(status: &serde_json::Value) -> Option<PlanState> {
    status["plan"]["state"].as_str()?.parse().ok()
}

/// Waits for a plan to finish; returns its status, or fails with the step's error.
pub(super) async fn wait_plan(
    client: &Client,
    id: u64,
    wait: Duration,
) -> Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let s = client.plan(id).await?;
        match plan_state(&s) {
            Some(PlanState::Succeeded) => return Ok(s),
            Some(PlanState::Failed) => {
                let why = s["events"]
                    .as_array()
                    .and_then(|e| e.iter().rev().find(|e| e["kind"].get("failed").is_some()))
                    .map(describe_event)
                    .unwrap_or_else(|| "failed".into());
                bail!("plan {id} {why}");
            }
            st if tokio::time::Instant::now() >= deadline => bail!(
                "plan {id} is still `{}` after {}; follow it with `ferric plan status {id} --wait 5m`",
                st.map_or("unknown", PlanState::as_str),
                humantime::format_duration(wait)
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The `output` of a finished plan's events.
pub(super) fn plan_output(status: &serde_json::Value) -> Option<serde_json::Value> {
    status["events"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| e["kind"].get("output").cloned())
}
