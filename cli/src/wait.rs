//! The command line's use of the API client: waiting for plans, and upload progress.

use super::output::describe_event;
use anyhow::Result;
use ferric_api::client::Client;
use ferric_api::model::PlanState;
use std::time::Duration;

/// Uploads an image, with a progress bar (bytes, rate, ETA) on a terminal.
pub(super) async fn upload_image(
    client: &Client,
    file: &std::path::Path,
    name: &str,
    format: Option<&str>,
    checksum: Option<&str>,
) -> Result<ferric_api::images::ImageView> {
    // Hidden by itself when standard error is not a terminal.
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("uploading {}", file.display()));
    let shown = bar.clone();
    let progress = move |sent: u64, total: u64| {
        if shown.length() != Some(total) {
            shown.set_length(total);
        }
        shown.set_position(sent);
    };
    let r = client
        .upload_image(file, name, format, checksum, progress)
        .await;
    bar.finish_and_clear();
    Ok(r?)
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
                return Err(super::EndedFailed(format!("plan {id} {why}")).into());
            }
            st if tokio::time::Instant::now() >= deadline => {
                return Err(super::TimedOut(format!(
                    "plan {id} is still `{}` after {}; follow it with `ferric plan status {id} --wait 5m`",
                    st.map_or("unknown", PlanState::as_str),
                    humantime::format_duration(wait)
                ))
                .into());
            }
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
