//! Running programs, and finding, stopping and waiting for the processes a rack started.

use crate::error::{LabError, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command to its end; its stdout, or an error naming the command with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Spawns a process in its own process group (it outlives this command and ignores its
/// terminal); its pid.
pub(crate) fn spawn_detached(cmd: &mut Command) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd.spawn().map_err(|source| LabError::Spawn {
        command: format!("{cmd:?}"),
        source,
    })?;
    Ok(child.id())
}

/// The pid in `pid_file` while that process runs a command line holding `needle` (pids are
/// reused: one that now names another program is not ours).
pub(crate) fn pid_alive(pid_file: &Path, needle: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains(needle)
        .then_some(pid)
}

/// Stops a process (SIGCONT, in case it was stopped, then SIGTERM; SIGKILL after `limit`) and
/// waits until it is gone, for at most twice `limit`.
pub(crate) fn kill_wait(pid: i32, limit: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let p = Pid::from_raw(pid);
    let _ = kill(p, Signal::SIGCONT);
    let _ = kill(p, Signal::SIGTERM);
    let started = Instant::now();
    while kill(p, None).is_ok() && is_running(pid) {
        if started.elapsed() > limit {
            let _ = kill(p, Signal::SIGKILL);
        }
        if started.elapsed() > limit * 2 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Running and not a zombie.
pub(crate) fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// Sends `signal` to `pid`.
pub(crate) fn signal(pid: i32, signal: nix::sys::signal::Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|source| {
        LabError::Signal {
            signal,
            pid,
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout_and_names_a_failing_command_with_its_stderr() {
        assert_eq!(
            run(Command::new("sh").args(["-c", "echo out"])).unwrap(),
            "out\n"
        );
        let e = run(Command::new("sh").args(["-c", "echo bad >&2; exit 3"])).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("\"sh\"") && shown.ends_with("failed: bad"),
            "{shown}"
        );
        let e = run(&mut Command::new("/nonexistent/ferric-lab-test")).unwrap_err();
        assert!(matches!(e, LabError::Spawn { .. }), "{e}");
    }

    #[test]
    fn a_pid_counts_only_while_its_command_line_names_the_needle() {
        let dir = std::env::temp_dir().join(format!("ferric-lab-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("self.pid");
        std::fs::write(&file, std::process::id().to_string()).unwrap();
        let me = std::env::args().next().unwrap();
        assert_eq!(
            pid_alive(&file, &me),
            Some(std::process::id() as i32),
            "{me}"
        );
        assert_eq!(pid_alive(&file, "no-such-program-here"), None);
        assert!(is_running(std::process::id() as i32));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
