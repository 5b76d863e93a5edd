//! The journal's files: one per plan, and the completed plans' ids (see the module above).

use super::record::{self, Record};
use ferric_proto::msg::PlanCursor;
use ferric_proto::plan::{Plan, PlanId, StepEvent, StepEventKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Completed plan ids remembered for de-duplication.
const COMPLETED_KEEP: usize = 4096;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// File I/O failed.
    #[error("journal I/O on {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A line other than the last one is not a valid record.
    #[error("journal {path} is corrupt at line {line}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Line number (1-based).
        line: usize,
    },
    /// An event for a plan the journal does not hold.
    #[error("plan {0} is not in the journal")]
    UnknownPlan(PlanId),
}

#[derive(Debug)]
struct Entry {
    plan: Plan,
    events: Vec<StepEvent>,
    acked: Option<u32>,
    file: File,
    path: PathBuf,
}

impl Entry {
    fn finished(&self) -> bool {
        self.events
            .last()
            .is_some_and(|e| e.ends_plan(self.plan.steps.len()))
    }

    fn all_acked(&self) -> bool {
        match (self.events.len(), self.acked) {
            (0, _) => true,
            (n, Some(a)) => a as usize + 1 >= n,
            (_, None) => false,
        }
    }

    /// Index of the step to run next: after the last done step; a started step that did not
    /// finish runs again (steps are idempotent).
    fn next_step(&self) -> usize {
        match self.events.last() {
            None => 0,
            Some(e) => match e.kind {
                StepEventKind::Done { .. } => e.step as usize + 1,
                StepEventKind::Started
                | StepEventKind::Progress { .. }
                | StepEventKind::Output(_) => e.step as usize,
                StepEventKind::Failed { .. } => self.plan.steps.len(),
            },
        }
    }
}

/// Work the executor should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// The plan.
    pub plan: Plan,
    /// Step index to run.
    pub step: usize,
    /// Whether this step was started before (the agent stopped while it ran).
    pub resumed: bool,
}

/// The journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    sync: bool,
    plans: BTreeMap<PlanId, Entry>,
    completed: BTreeSet<PlanId>,
    completed_file: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// Opens the journal in `dir`, replaying what is there. With `sync`, every append is
    /// flushed to the device before it is reported.
    pub fn open(dir: &Path, sync: bool) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let completed_path = dir.join("completed.log");
        let mut completed: BTreeSet<PlanId> = BTreeSet::new();
        if completed_path.exists() {
            let f = File::open(&completed_path).map_err(io(&completed_path))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io(&completed_path))?;
                if let Ok(id) = line.trim().parse() {
                    completed.insert(id);
                }
            }
            if completed.len() > COMPLETED_KEEP {
                let keep: BTreeSet<_> = completed
                    .iter()
                    .rev()
                    .take(COMPLETED_KEEP)
                    .copied()
                    .collect();
                completed = keep;
                let text: String = completed.iter().map(|id| format!("{id}\n")).collect();
                crate::tls::write_file(&completed_path, text.as_bytes(), 0o644).map_err(|_| {
                    JournalError::Corrupt {
                        path: completed_path.clone(),
                        line: 0,
                    }
                })?;
            }
        }
        let completed_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&completed_path)
            .map_err(io(&completed_path))?;
        let mut plans = BTreeMap::new();
        for dirent in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = dirent.map_err(io(dir))?.path();
            let is_plan = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("plan-") && n.ends_with(".jsonl"));
            if !is_plan {
                continue;
            }
            if let Some(entry) = Self::replay(&path)? {
                plans.insert(entry.plan.id, entry);
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            sync,
            plans,
            completed,
            completed_file,
        })
    }

    fn replay(path: &Path) -> Result<Option<Entry>, JournalError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let r = record::replay(&bytes).map_err(|line| JournalError::Corrupt {
            path: path.to_owned(),
            line,
        })?;
        if r.torn {
            tracing::warn!(path = %path.display(), "ignoring a torn last journal line");
        }
        if r.good_len < bytes.len() {
            // Cut the torn tail so that the next append starts on a line of its own.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.set_len(r.good_len as u64).map_err(io(path))?;
        }
        let Some(plan) = r.plan else {
            return Ok(None);
        };
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        Ok(Some(Entry {
            plan,
            events: r.events,
            acked: r.acked,
            file,
            path: path.to_owned(),
        }))
    }

    fn append(&mut self, plan: PlanId, rec: &Record) -> Result<(), JournalError> {
        let sync = self.sync;
        let entry = self
            .plans
            .get_mut(&plan)
            .ok_or(JournalError::UnknownPlan(plan))?;
        let mut line = serde_json::to_vec(rec).map_err(|e| JournalError::Io {
            path: entry.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        // A failed append (a full disk) is cut off again: a partial line left in the middle
        // of the file would make the whole journal unreadable at the next start.
        let before = entry
            .file
            .metadata()
            .map(|m| m.len())
            .map_err(io(&entry.path))?;
        let written = entry
            .file
            .write_all(&line)
            .and_then(|()| if sync { entry.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            use std::io::Seek;
            let _ = entry.file.set_len(before);
            let _ = entry.file.seek(std::io::SeekFrom::Start(before));
            return Err(io(&entry.path)(e));
        }
        Ok(())
    }

    /// Whether the journal holds or has completed this plan.
    pub fn knows(&self, plan: PlanId) -> bool {
        self.plans.contains_key(&plan) || self.completed.contains(&plan)
    }

    /// Records a new plan; false if it was known already (nothing written).
    pub fn add_plan(&mut self, plan: &Plan) -> Result<bool, JournalError> {
        if self.knows(plan.id) {
            return Ok(false);
        }
        let path = self.dir.join(format!("plan-{}.jsonl", plan.id));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        self.plans.insert(
            plan.id,
            Entry {
                plan: plan.clone(),
                events: vec![],
                acked: None,
                file,
                path: path.clone(),
            },
        );
        self.append(plan.id, &Record::Plan(plan.clone()))?;
        if self.sync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(true)
    }

    /// Records an event of `plan`, numbering it, and returns it.
    pub fn record(
        &mut self,
        plan: PlanId,
        step: u32,
        at_ms: u64,
        kind: StepEventKind,
    ) -> Result<StepEvent, JournalError> {
        let seq = self
            .plans
            .get(&plan)
            .ok_or(JournalError::UnknownPlan(plan))?
            .events
            .len() as u32;
        let ev = StepEvent {
            plan,
            seq,
            step,
            at_ms,
            kind,
        };
        self.append(plan, &Record::Event(ev.clone()))?;
        if let Some(e) = self.plans.get_mut(&plan) {
            e.events.push(ev.clone());
        }
        Ok(ev)
    }

    /// Records that the coordinator stored events `0..=seq`; forgets a finished, fully
    /// acknowledged plan.
    pub fn ack(&mut self, plan: PlanId, seq: u32) -> Result<(), JournalError> {
        let Some(entry) = self.plans.get(&plan) else {
            return Ok(()); // already forgotten
        };
        if entry.acked.is_some_and(|a| a >= seq) {
            return Ok(());
        }
        self.append(plan, &Record::Ack(seq))?;
        let entry = self
            .plans
            .get_mut(&plan)
            .ok_or(JournalError::UnknownPlan(plan))?;
        entry.acked = Some(seq);
        if entry.finished() && entry.all_acked() {
            let path = entry.path.clone();
            writeln!(self.completed_file, "{plan}").map_err(io(&path))?;
            if self.sync {
                self.completed_file.sync_data().map_err(io(&path))?;
            }
            self.completed.insert(plan);
            self.plans.remove(&plan);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Whether the coordinator has acknowledged the end (done or failed) of `plan`'s step
    /// `step`: what a step that ends the agent (a reboot) waits for, so that its report is
    /// not lost with the machine's memory.
    pub fn delivered(&self, plan: PlanId, step: u32) -> bool {
        if self.completed.contains(&plan) {
            return true;
        }
        let Some(e) = self.plans.get(&plan) else {
            return false;
        };
        let ended = e.events.iter().position(|ev| {
            ev.step == step
                && matches!(
                    ev.kind,
                    StepEventKind::Done { .. } | StepEventKind::Failed { .. }
                )
        });
        matches!((ended, e.acked), (Some(i), Some(a)) if a as usize >= i)
    }

    /// Events not yet acknowledged, plan by plan in order.
    pub fn unacked(&self) -> Vec<StepEvent> {
        self.plans
            .values()
            .flat_map(|e| {
                let from = e.acked.map_or(0, |a| a as usize + 1);
                e.events.iter().skip(from).cloned()
            })
            .collect()
    }

    /// What the agent tells the coordinator in `Hello`.
    pub fn cursors(&self) -> Vec<PlanCursor> {
        self.plans
            .values()
            .map(|e| PlanCursor {
                plan: e.plan.id,
                next_seq: e.events.len() as u32,
                finished: e.finished(),
            })
            .collect()
    }

    /// The next step to run: the oldest unfinished plan's next step.
    pub fn next_work(&self) -> Option<Work> {
        self.plans.values().find(|e| !e.finished()).map(Self::work)
    }

    /// The next step of one plan, if it has not finished.
    pub fn next_work_of(&self, plan: PlanId) -> Option<Work> {
        self.plans
            .get(&plan)
            .filter(|e| !e.finished())
            .map(Self::work)
    }

    /// Unfinished plans, oldest first, that may start now: not in `running`, and sharing no
    /// object with an older unfinished plan (those keep arrival order).
    pub fn startable(&self, running: &std::collections::HashSet<PlanId>) -> Vec<PlanId> {
        use ferric_proto::plan::Access;
        use std::collections::HashSet;
        let mut written: HashSet<String> = HashSet::new();
        let mut read: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for e in self.plans.values().filter(|e| !e.finished()) {
            let mut w = HashSet::new();
            let mut r = HashSet::new();
            for (obj, access) in e.plan.steps.iter().flat_map(|s| s.step.objects()) {
                match access {
                    Access::Write => w.insert(obj),
                    Access::Read => r.insert(obj),
                };
            }
            let free = w.is_disjoint(&written) && w.is_disjoint(&read) && r.is_disjoint(&written);
            if free && !running.contains(&e.plan.id) {
                out.push(e.plan.id);
            }
            written.extend(w);
            read.extend(r);
        }
        out
    }

    fn work(e: &Entry) -> Work {
        {
            let step = e.next_step();
            let resumed = e.events.last().is_some_and(|l| {
                l.step as usize == step && !matches!(l.kind, StepEventKind::Done { .. })
            });
            Work {
                plan: e.plan.clone(),
                step,
                resumed,
            }
        }
    }

    /// Plans held (unfinished or not yet fully acknowledged).
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Whether no plan is held.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
