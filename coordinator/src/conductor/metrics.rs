//! `/metrics`: the fleet as Prometheus series, read from the store and the hub at each scrape
//! and written in the Prometheus text format by `prometheus-client`.
//!
//! A caller sees the series of its project's nodes and plans only. Names follow Prometheus'
//! conventions: base units (seconds), `_timestamp_seconds` for points in time, one series per
//! state with the value 1 for the current one (a state set), a histogram for durations.

use super::access::Caller;
use super::{ConductorError, nodes};
use crate::Shared;
use crate::model::{PlanState, ProvisionState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// Upper bounds of the plan duration histogram's buckets, seconds: a power action takes
/// under a second, a guest a few, a deploy tens to hundreds.
pub const PLAN_DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// The series' names, as scraped (each `# TYPE` line of the text names one).
pub const SERIES: [&str; 10] = [
    "ferric_nodes_enrolled",
    "ferric_agents_connected",
    "ferric_node_connected",
    "ferric_node_last_seen_timestamp_seconds",
    "ferric_node_telemetry_last_sample_timestamp_seconds",
    "ferric_node_telemetry_age_seconds",
    "ferric_node_power_on",
    "ferric_node_provision_state",
    "ferric_plans",
    "ferric_plan_duration_seconds",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    node: String,
    project: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    project: String,
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// The series the caller may see, in the Prometheus text format.
pub async fn render(s: &Shared, caller: &Caller) -> Result<String, ConductorError> {
    let now_ms = crate::now_ms();
    let mut reg = Registry::with_prefix("ferric");

    let enrolled = Family::<RoleLabels, Gauge>::default();
    let agents = Gauge::<i64>::default();
    let connected = Family::<NodeLabels, Gauge>::default();
    let last_seen = Family::<NodeLabels, FloatGauge>::default();
    let sample_at = Family::<NodeLabels, FloatGauge>::default();
    let sample_age = Family::<NodeLabels, FloatGauge>::default();
    let power = Family::<NodeLabels, Gauge>::default();
    let provision = Family::<StateLabels, Gauge>::default();
    let plans = Family::<PlanLabels, Gauge>::default();
    let durations = Family::<PlanLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(PLAN_DURATION_BUCKETS)
    });

    let mut nodes_seen = s.store.nodes().await?;
    nodes_seen.retain(|n| caller.sees(&n.project));
    let bmcs: HashMap<String, crate::store::BmcRow> = s
        .store
        .bmcs(None)
        .await?
        .into_iter()
        .map(|b| (b.node.clone(), b))
        .collect();
    let mut project_of = HashMap::new();
    for n in nodes_seen {
        project_of.insert(n.name.clone(), n.project.clone());
        let labels = NodeLabels {
            node: n.name.clone(),
            project: n.project.clone(),
        };
        let project = n.project.clone();
        let latest = s.hub.telemetry.latest(&n.name);
        let view = nodes::view(s, n, bmcs.get(&labels.node));
        enrolled
            .get_or_create(&RoleLabels {
                role: view.role.to_string(),
            })
            .inc();
        connected
            .get_or_create(&labels)
            .set(i64::from(view.connected));
        if view.connected {
            agents.inc();
        }
        if let Some(at) = view.last_seen_ms {
            last_seen.get_or_create(&labels).set(at as f64 / 1000.0);
        }
        if let Some(t) = latest {
            sample_at
                .get_or_create(&labels)
                .set(t.received_at_ms as f64 / 1000.0);
            sample_age
                .get_or_create(&labels)
                .set((now_ms - t.received_at_ms).max(0) as f64 / 1000.0);
        }
        match view.power.as_deref() {
            Some("on") => {
                power.get_or_create(&labels).set(1);
            }
            Some("off") => {
                power.get_or_create(&labels).set(0);
            }
            _ => {}
        }
        if let Some(current) = view.state {
            for st in ProvisionState::ALL {
                provision
                    .get_or_create(&StateLabels {
                        node: view.name.clone(),
                        project: project.clone(),
                        state: st.to_string(),
                    })
                    .set(i64::from(*st == current));
            }
        }
    }

    // Every state of every project seen is a series, 0 when no plan is in it, so that a
    // rate over it has no gaps.
    let mut projects: Vec<String> = project_of.values().cloned().collect();
    projects.sort();
    projects.dedup();
    for p in &projects {
        for st in PlanState::ALL {
            plans
                .get_or_create(&PlanLabels {
                    project: p.clone(),
                    state: st.to_string(),
                })
                .set(0);
        }
    }
    for f in s.store.plan_figures().await? {
        let Some(project) = project_of.get(&f.node) else {
            continue;
        };
        let labels = PlanLabels {
            project: project.clone(),
            state: f.state.to_string(),
        };
        plans.get_or_create(&labels).inc();
        if let Some(us) = f.took_us {
            durations
                .get_or_create(&labels)
                .observe(us.max(0) as f64 / 1e6);
        }
    }

    reg.register("nodes_enrolled", "Enrolled nodes, by role", enrolled);
    reg.register(
        "agents_connected",
        "Nodes whose agent has a live session now",
        agents,
    );
    reg.register(
        "node_connected",
        "1 while the node's agent has a live session",
        connected,
    );
    reg.register_with_unit(
        "node_last_seen_timestamp",
        "When the node's agent last sent anything (Unix time)",
        Unit::Seconds,
        last_seen,
    );
    reg.register_with_unit(
        "node_telemetry_last_sample_timestamp",
        "When the node's newest telemetry sample was received (Unix time)",
        Unit::Seconds,
        sample_at,
    );
    reg.register_with_unit(
        "node_telemetry_age",
        "How old the node's newest telemetry sample is at this scrape",
        Unit::Seconds,
        sample_age,
    );
    reg.register(
        "node_power_on",
        "Bare-metal nodes: 1 when its BMC last said on, 0 off (absent when unknown)",
        power,
    );
    reg.register(
        "node_provision_state",
        "Bare-metal nodes: 1 for the provision state it is in, 0 for the others",
        provision,
    );
    reg.register("plans", "Plans by state", plans);
    reg.register_with_unit(
        "plan_duration",
        "Finished plans, from creation to their last step's end",
        Unit::Seconds,
        durations,
    );

    if caller.fleet() {
        // Calls refused without a valid token belong to no project: the fleet's to see.
        let refused = Family::<CodeLabels, Counter>::default();
        for (code, n) in crate::lock(&s.unauthenticated_total).iter() {
            refused
                .get_or_create(&CodeLabels {
                    code: (*code).to_owned(),
                })
                .inc_by(*n);
        }
        reg.register(
            "api_unauthenticated_calls",
            "API calls refused for want of a valid token, by code",
            refused,
        );
    }

    let mut out = String::new();
    // Writing into a String cannot fail, and every name and label above is valid.
    prometheus_client::encoding::text::encode(&mut out, &reg)
        .expect("the text encoding of well-formed metrics into a String");
    Ok(out)
}
