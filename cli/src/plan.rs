//! `ferric plan …`: apply a plan file, follow a plan, list plans.

use super::Client;
use super::output::{describe_event, print_json, print_list, table};
use super::wait::plan_state;
use anyhow::{Context, Result};
use clap::Subcommand;
use ferric_api::model::PlanState;
use ferric_api::plans::PlanFile;
use std::path::PathBuf;
use std::time::Duration;

/// `ferric plan …`.
#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Store a plan for nodes and push it to them.
    Apply {
        /// Plan file (YAML or JSON).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Node to run it on (repeat for several; one plan each).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
    /// Show a plan and its events.
    Status {
        /// Plan id.
        id: u64,
        /// Wait until the plan finishes (at most this long).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// Cancel an unfinished plan: one not yet delivered fails at once; its agent stops one it
    /// holds (the step under way is abandoned). It ends `failed`, kind `cancelled`.
    Cancel {
        /// Plan id.
        id: u64,
        /// Wait until the plan has ended (at most this long).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// List recent plans.
    List {
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
    },
}

/// `ferric plan apply`.
pub(super) async fn apply(
    client: &Client,
    file: &std::path::Path,
    nodes: Vec<String>,
    json: bool,
) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let plan: PlanFile = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a valid plan file", file.display()))?;
    plan.to_steps()
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let created = client.apply(nodes, plan).await?;
    print_list(json, &created, &["PLAN", "NODE", "DELIVERY"], |c| {
        vec![
            c.id.to_string(),
            c.node.clone(),
            if c.pushed {
                "pushed".into()
            } else {
                "queued (agent offline)".into()
            },
        ]
    })
}

/// `ferric plan cancel`.
pub(super) async fn cancel(
    client: &Client,
    id: u64,
    wait: Option<Duration>,
    json: bool,
) -> Result<()> {
    let c: ferric_api::plans::Cancelled =
        client.post(&format!("/v1/plans/{id}/cancel"), &()).await?;
    if wait.is_some() {
        return status(client, id, wait, json).await;
    }
    super::output::print_item(json, &c, |c| {
        let how = if c.state.is_finished() {
            "it ended before it was delivered"
        } else if c.agent_told {
            "its agent was told to stop it"
        } else {
            "its agent is told when it connects"
        };
        format!("plan {} cancelled: {how} ({})", c.plan, c.state)
    })
}

/// `ferric plan status`.
pub(super) async fn status(
    client: &Client,
    id: u64,
    wait: Option<Duration>,
    json: bool,
) -> Result<()> {
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    let status = loop {
        let s = client.plan(id).await?;
        let done = plan_state(&s).is_some_and(PlanState::is_finished);
        match deadline {
            Some(d) if !done && tokio::time::Instant::now() < d => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Some(_) if !done => {
                return Err(super::TimedOut(format!(
                    "plan {id} is still `{}` after the wait",
                    s["plan"]["state"].as_str().unwrap_or("unknown")
                ))
                .into());
            }
            _ => break s,
        }
    };
    let failed = || -> Result<()> {
        if status["plan"]["state"] == PlanState::Failed.as_str() {
            return Err(super::EndedFailed(format!("plan {id} failed")).into());
        }
        Ok(())
    };
    if json {
        print_json(&status)?;
        return failed();
    }
    let p = &status["plan"];
    println!(
        "plan {} on {}: {}",
        p["id"],
        p["node"].as_str().unwrap_or(""),
        p["state"].as_str().unwrap_or("")
    );
    let steps = p["steps"].as_array().cloned().unwrap_or_default();
    let events = status["events"].as_array().cloned().unwrap_or_default();
    let rows = table(&["SEQ", "STEP", "KIND", "EVENT"], &events, |e| {
        let step = e["step"].as_u64().unwrap_or(0) as usize;
        let kind = steps
            .get(step)
            .and_then(|s| s["step"].as_object())
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        vec![
            e["seq"].to_string(),
            step.to_string(),
            kind,
            describe_event(e),
        ]
    });
    println!("{rows}");
    failed()
}

/// `ferric plan list`.
pub(super) async fn list(client: &Client, node: Option<String>, json: bool) -> Result<()> {
    let path = match &node {
        Some(n) => format!("/v1/plans?node={n}"),
        None => "/v1/plans".into(),
    };
    let plans: Vec<serde_json::Value> = client.get(&path).await?;
    print_list(json, &plans, &["PLAN", "NODE", "STATE", "STEPS"], |p| {
        vec![
            p["id"].to_string(),
            p["node"].as_str().unwrap_or("").to_owned(),
            p["state"].as_str().unwrap_or("").to_owned(),
            p["steps"].as_array().map_or(0, |s| s.len()).to_string(),
        ]
    })
}
