//! `ferric node manage | inspect | provide | deploy | undeploy | rebuild | abort | wait`: the
//! bare-metal lifecycle's verbs, for one node or several at once, and waiting for states.

use super::Client;
use super::output::{human_bytes, print_json};
use anyhow::{Context, Result, bail};
use clap::Args;
use ferric_api::lifecycle::{
    ConfigDrive, ConfigDriveFormat, ImageUrl, InstanceConfig, LifecycleView, ProvisionRequest,
};
use ferric_api::model::ProvisionState;
use ferric_api::model::Verb;
use ferric_api::nodes::NodeDetail;
use ferric_proto::plan::{ConfigFile, EraseMode, RootHint};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `--wait` of a lifecycle verb.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until every node has reached the verb's end state (`manageable`, `available`,
    /// `active`), showing each change of state and the image write's progress; exit status
    /// 3 when one lands in a failed state, 4 when the time runs out.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long at most.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: Duration,
}

/// What a deploy writes.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["image", "image_url"]))]
pub struct DeployArgs {
    /// Image name in the coordinator's store (`ferric image upload`).
    #[arg(long)]
    pub image: Option<String>,
    /// An image the node's ramdisk fetches from this `http://` or `https://` URL instead
    /// (https checked against Debian's CA bundle); needs --checksum.
    #[arg(long, value_name = "URL", requires = "checksum")]
    pub image_url: Option<String>,
    /// The image's `sha256:HEX` (with --image-url): checked as the bytes arrive.
    #[arg(long, value_name = "sha256:HEX", requires = "image_url")]
    pub checksum: Option<String>,
    /// The image's format at --image-url, `raw` or `qcow2` (default: as its content says).
    #[arg(long, value_parser = ["raw", "qcow2"], requires = "image_url")]
    pub image_format: Option<String>,
    /// Config drive from this directory, as it is (`openstack/…` makes it `config-2`,
    /// anything else NoCloud `cidata`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["ssh_key", "hostname", "no_config_drive"])]
    pub config_drive: Option<PathBuf>,
    /// Public SSH key for the default user (repeat for several).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
    /// Host name (default: the node's name; only with one node).
    #[arg(long)]
    pub hostname: Option<String>,
    /// User data for cloud-init (`#cloud-config`, a script, …; at most 64 KiB).
    #[arg(long, value_name = "FILE", conflicts_with = "config_drive")]
    pub user_data: Option<PathBuf>,
    /// The config drive's layout: `nocloud` (label `cidata`) or `config-2` (OpenStack's, which
    /// Glean reads too). Either carries the node's network (`ferric node network`).
    #[arg(long, default_value = "nocloud", value_parser = ["nocloud", "config-2"], conflicts_with = "config_drive")]
    pub config_drive_format: String,
    /// Write no config drive (for images that read none).
    #[arg(long, conflicts_with_all = ["user_data", "ssh_key", "hostname"])]
    pub no_config_drive: bool,
    /// Root disk hint `KEY=VALUE` (`name=sda`, `serial=…`, `wwn=…`, `min-size=100G`);
    /// the smallest matching disk is the root disk (the smallest disk without a hint).
    #[arg(long, value_name = "KEY=VALUE")]
    pub root_device: Vec<String>,
}

fn root_hint(pairs: &[String]) -> Result<Option<RootHint>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut h = RootHint::default();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--root-device `{p}` is not KEY=VALUE"))?;
        match k {
            "name" => h.name = Some(v.to_owned()),
            "serial" => h.serial = Some(v.to_owned()),
            "wwn" => h.wwn = Some(v.to_owned()),
            "min-size" => h.min_size_bytes = Some(super::output::parse_size(v)?),
            _ => bail!("--root-device: unknown key `{k}` (name, serial, wwn, min-size)"),
        }
    }
    Ok(Some(h))
}

/// The files of a config-drive directory, by relative path.
fn drive_dir(dir: &Path) -> Result<ConfigDrive> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<ConfigFile>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(base, &p, out)?;
            } else {
                let rel = p.strip_prefix(base).expect("under base");
                out.push(ConfigFile {
                    path: rel.to_string_lossy().into_owned(),
                    content: std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {} (as text)", p.display()))?,
                });
            }
        }
        Ok(())
    }
    let mut files = vec![];
    walk(dir, dir, &mut files)?;
    if files.is_empty() {
        bail!("the config drive directory {} is empty", dir.display());
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let label = if files.iter().any(|f| f.path.starts_with("openstack/")) {
        "config-2"
    } else {
        "cidata"
    };
    Ok(ConfigDrive {
        label: label.into(),
        files,
    })
}

/// Sends `verb` to each node and prints where each went; with `--wait`, then waits for the
/// verb's end state.
pub(super) async fn verb(
    client: &Client,
    verb: Verb,
    names: &[String],
    erase: Option<EraseMode>,
    deploy: Option<&DeployArgs>,
    then: &WaitArgs,
    json: bool,
) -> Result<()> {
    let target = match (then.wait, verb.ends_in()) {
        (false, _) => None,
        (true, Some(t)) => Some(t),
        (true, None) => bail!(
            "`{verb}` ends in the failed state of what the node was doing; wait for that with `ferric node wait --state …`"
        ),
    };
    // With --wait and JSON, the one document printed is the end states.
    let print = match (json, target.is_some()) {
        (false, _) => Print::Text,
        (true, false) => Print::Json,
        (true, true) => Print::Nothing,
    };
    let sent = send(client, verb, names, erase, deploy, print).await?;
    match target {
        Some(t) => {
            // An error the coordinator recorded from the moment the verb was taken on (its own
            // clock) is this verb's.
            let from = sent.iter().map(|v| Some(v.since_ms)).collect();
            wait_from(client, names, t, then.timeout, json, from).await
        }
        None => Ok(()),
    }
}

/// What [`send`] prints of where the nodes went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Print {
    Text,
    Json,
    Nothing,
}

/// Sends `verb` to each node; prints where each went; returns the nodes' lifecycles as the
/// coordinator answered, in the order of `names`.
async fn send(
    client: &Client,
    verb: Verb,
    names: &[String],
    erase: Option<EraseMode>,
    deploy: Option<&DeployArgs>,
    print: Print,
) -> Result<Vec<LifecycleView>> {
    if let Some(d) = deploy
        && d.hostname.is_some()
        && names.len() > 1
    {
        bail!("--hostname names one host; each of several nodes gets its own name by default");
    }
    let keys: Vec<String> = match deploy {
        Some(d) => d
            .ssh_key
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the SSH key {}", f.display()))
                    .map(|k| k.trim().to_owned())
            })
            .collect::<Result<_>>()?,
        None => vec![],
    };
    let user_data = match deploy.and_then(|d| d.user_data.as_ref()) {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the user data {} (as text)", f.display()))?,
        ),
        None => None,
    };
    let mut out = vec![];
    let mut failed = 0;
    for name in names {
        let mut req = ProvisionRequest {
            verb,
            erase,
            image: None,
            root: None,
            config_drive: None,
            instance: None,
            image_url: None,
        };
        if let Some(d) = deploy {
            req.image = d.image.clone();
            req.image_url = d.image_url.as_ref().map(|url| ImageUrl {
                url: url.clone(),
                checksum: d.checksum.clone().unwrap_or_default(),
                format: d.image_format.clone(),
            });
            req.root = root_hint(&d.root_device)?;
            match (&d.config_drive, d.no_config_drive) {
                (Some(dir), _) => req.config_drive = Some(drive_dir(dir)?),
                (None, true) => {}
                // The coordinator writes it, with the node's network.
                (None, false) => {
                    req.instance = Some(InstanceConfig {
                        hostname: d.hostname.clone(),
                        ssh_keys: keys.clone(),
                        user_data: user_data.clone(),
                        format: if d.config_drive_format == "config-2" {
                            ConfigDriveFormat::Config2
                        } else {
                            ConfigDriveFormat::NoCloud
                        },
                    })
                }
            }
        }
        match client
            .post::<_, LifecycleView>(&format!("/v1/nodes/{name}/provision"), &req)
            .await
        {
            Ok(v) => {
                if print == Print::Text {
                    println!("node {name}: {verb} → {}", describe(&v));
                }
                out.push(v);
            }
            Err(e) => {
                eprintln!("node {name}: {verb} refused: {e:#}");
                failed += 1;
            }
        }
    }
    if print == Print::Json {
        print_json(&out)?;
    }
    if failed > 0 {
        bail!("{failed} of {} nodes refused `{verb}`", names.len());
    }
    Ok(out)
}

/// `state (doing, progress)`.
pub(super) fn describe(v: &LifecycleView) -> String {
    let mut s = v.state.to_string();
    if let Some(d) = &v.doing {
        s.push_str(&format!(": {d}"));
        if let Some(p) = &v.progress {
            s.push_str(&format!(", {}", progress(p)));
        }
    }
    s
}

/// `1.2 GiB of 2.0 GiB (60%), 85.0 MiB/s, ETA 9s`.
pub(super) fn progress(p: &ferric_api::lifecycle::ProgressView) -> String {
    let mut s = human_bytes(p.done);
    if let Some(t) = p.total.filter(|t| *t > 0) {
        s.push_str(&format!(
            " of {} ({:.0}%)",
            human_bytes(t),
            p.done as f64 * 100.0 / t as f64
        ));
    }
    if let Some(r) = p.bytes_per_sec {
        s.push_str(&format!(", {}/s", human_bytes(r as u64)));
    }
    if let Some(e) = p.eta_secs {
        s.push_str(&format!(", ETA {e:.0}s"));
    }
    s
}

fn is_failed(s: ProvisionState) -> bool {
    matches!(
        s,
        ProvisionState::InspectFailed
            | ProvisionState::CleanFailed
            | ProvisionState::DeployFailed
            | ProvisionState::Error
    )
}

/// How `ferric node wait` shows the nodes: lines as their states change, and on a terminal a
/// live bar per node (its step, and the image write's bytes, rate and ETA from the node's
/// telemetry).
struct Show {
    started: Instant,
    last: Vec<String>,
    bars: Option<(indicatif::MultiProgress, Vec<indicatif::ProgressBar>)>,
}

impl Show {
    fn new(names: &[String], json: bool) -> Self {
        use std::io::IsTerminal;
        let bars = (!json && std::io::stderr().is_terminal()).then(|| {
            let multi = indicatif::MultiProgress::new();
            let bars = names
                .iter()
                .map(|n| {
                    let b = multi.add(indicatif::ProgressBar::new_spinner());
                    b.set_style(state_style());
                    b.set_prefix(n.clone());
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                })
                .collect();
            (multi, bars)
        });
        Show {
            started: Instant::now(),
            last: vec![String::new(); names.len()],
            bars,
        }
    }

    /// Shows node `i` now; a change of state (or step) is also printed as a line.
    fn node(&mut self, i: usize, name: &str, v: &LifecycleView, json: bool) {
        let state = match &v.doing {
            Some(d) => format!("{}: {d}", v.state),
            None => v.state.to_string(),
        };
        if state != self.last[i] && !json {
            let line = format!(
                "{:>6.1}s  {name}: {state}",
                self.started.elapsed().as_secs_f64()
            );
            match &self.bars {
                // Above the bars, on standard output like the lines without bars.
                Some((multi, _)) => multi.suspend(|| println!("{line}")),
                None => println!("{line}"),
            }
            self.last[i] = state.clone();
        }
        if let Some((_, bars)) = &self.bars {
            let b = &bars[i];
            match v
                .progress
                .as_ref()
                .filter(|p| p.total.is_some_and(|t| t > 0))
            {
                Some(p) => {
                    b.set_style(bytes_style());
                    b.set_length(p.total.unwrap_or_default());
                    b.set_position(p.done);
                    let mut m = String::new();
                    if let Some(r) = p.bytes_per_sec {
                        m.push_str(&format!("{:.1} MB/s", r / 1e6));
                    }
                    if let Some(e) = p.eta_secs {
                        m.push_str(&format!(", ETA {e:.0}s"));
                    }
                    b.set_message(m);
                }
                None => {
                    b.set_style(state_style());
                    b.set_message(state);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for b in bars {
                b.finish_and_clear();
            }
        }
    }
}

fn state_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

fn bytes_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} {prefix:.bold} writing [{bar:30}] {bytes}/{total_bytes} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// `ferric node wait`: until every node is in `state`; fails at once when one lands in a
/// failed state (naming its error; exit status 3), and at `timeout` (exit status 4).
pub(super) async fn wait(
    client: &Client,
    names: &[String],
    state: ProvisionState,
    timeout: Duration,
    json: bool,
) -> Result<()> {
    wait_from(client, names, state, timeout, json, vec![None; names.len()]).await
}

/// [`wait`], counting as new the errors recorded at or after `from[i]` (coordinator's clock)
/// for node `i`; `None`: those newer than the one it had when first looked at.
async fn wait_from(
    client: &Client,
    names: &[String],
    state: ProvisionState,
    timeout: Duration,
    json: bool,
    from: Vec<Option<i64>>,
) -> Result<()> {
    let mut show = Show::new(names, json);
    let r = wait_shown(client, names, state, timeout, json, from, &mut show).await;
    show.finish();
    r
}

async fn wait_shown(
    client: &Client,
    names: &[String],
    state: ProvisionState,
    timeout: Duration,
    json: bool,
    mut from: Vec<Option<i64>>,
    show: &mut Show,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut done = 0;
        let mut views = vec![];
        for (i, name) in names.iter().enumerate() {
            let d: NodeDetail = client.get(&format!("/v1/nodes/{name}")).await?;
            let Some(v) = d.lifecycle else {
                bail!("node `{name}` is not a bare-metal node");
            };
            show.node(i, name, &v, json);
            let new_error_from =
                *from[i].get_or_insert_with(|| v.error_at_ms.map_or(i64::MIN, |at| at + 1));
            if v.state == state && v.step.is_none() {
                done += 1;
            } else if (is_failed(v.state)
                // A verification that failed sends the node back to `enroll`, with its error.
                || (v.state == ProvisionState::Enroll
                    && v.error_at_ms.is_some_and(|at| at >= new_error_from)))
                && !is_failed(state)
            {
                return Err(super::EndedFailed(format!(
                    "node `{name}` is {}: {}",
                    v.state,
                    v.error.as_deref().unwrap_or("(no error recorded)")
                ))
                .into());
            }
            views.push(v);
        }
        if done == names.len() {
            if json {
                print_json(&views)?;
            }
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(super::TimedOut(format!(
                "timed out after {} waiting for {} to be {state}",
                humantime::format_duration(timeout),
                names.join(", ")
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
