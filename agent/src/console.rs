//! Serial console logs the agent tails for the coordinator: files on this host where a
//! console server (or the lab's QEMU) writes a machine's serial port. Each poll reads what was
//! appended since the last one and hands it on as text lines ([`console_text`]); a log that
//! shrank was rotated or truncated and is read again from its start; one far behind is
//! skipped ahead, saying how much was left out. Logs must be regular files in the agent's
//! console directories (`--console-dir`, [`DEFAULT_DIRS`] by default — their own list, not the
//! directories plans may name paths in, which hold keys and disks): the file is opened without
//! following a final symbolic link and without blocking (a FIFO is refused, not waited on),
//! and where the opened file really is is checked again, so a link swapped in meanwhile does
//! not lead out of them. The coordinator cannot make the agent read any other file.

use crate::paths::PathPolicy;
use ferric_proto::msg::{CONSOLE_ERROR_MAX, ConsoleLines, ConsoleSource, console_text, cut_chars};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where console logs may be unless the agent is told otherwise (`--console-dir`).
pub const DEFAULT_DIRS: &[&str] = &["/var/log/ferric/consoles"];

/// What a new source starts with: the log's last bytes, so the first look has context.
pub const START_BYTES: u64 = 8 * 1024;

/// The most read from one log in one poll; more behind than this is skipped.
pub const POLL_BYTES: u64 = 64 * 1024;

/// A partial line longer than this is sent as it is.
const PARTIAL_MAX: usize = 4 * 1024;

#[derive(Debug)]
struct Tail {
    path: String,
    /// Offset read up to; `None` until the log was first seen.
    offset: Option<u64>,
    /// The file read (device, inode): another one at the path is a rotated log.
    file: Option<(u64, u64)>,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// The error last reported (reported again only when it changes).
    error: Option<String>,
}

/// The logs being tailed, by node.
#[derive(Debug)]
pub struct ConsoleTail {
    policy: PathPolicy,
    tails: BTreeMap<String, Tail>,
}

impl ConsoleTail {
    /// No logs yet; paths are checked against `policy`.
    pub fn new(policy: PathPolicy) -> Self {
        ConsoleTail {
            policy,
            tails: BTreeMap::new(),
        }
    }

    /// Whether any log is tailed.
    pub fn is_empty(&self) -> bool {
        self.tails.is_empty()
    }

    /// Replaces the set (sent at each session's start); a log tailed already (same node, same
    /// path) goes on where it was, and its error, if any, is said again (the coordinator may
    /// have restarted without it).
    pub fn set(&mut self, sources: Vec<ConsoleSource>) {
        let mut old = std::mem::take(&mut self.tails);
        for s in sources {
            let tail = match old.remove(&s.name) {
                Some(t) if t.path == s.path => Tail { error: None, ..t },
                _ => Tail {
                    path: s.path,
                    offset: None,
                    file: None,
                    partial: Vec::new(),
                    error: None,
                },
            };
            self.tails.insert(s.name, tail);
        }
    }

    /// Reads what each log gained since the last poll: the nodes with new lines or whose
    /// error changed (appeared, changed, or went).
    pub fn poll(&mut self) -> Vec<ConsoleLines> {
        let mut out = Vec::new();
        for (name, t) in &mut self.tails {
            let (lines, error) = match read(&self.policy, t) {
                Ok(lines) => (lines, None),
                Err(e) => (Vec::new(), Some(cut_chars(e, CONSOLE_ERROR_MAX))),
            };
            let new_error = error != t.error;
            t.error = error.clone();
            if !lines.is_empty() || new_error {
                out.push(ConsoleLines {
                    name: name.clone(),
                    lines,
                    error,
                });
            }
        }
        out
    }
}

/// New lines of `t`'s log, or why it cannot be read.
fn read(policy: &PathPolicy, t: &mut Tail) -> Result<Vec<String>, String> {
    let path = Path::new(&t.path);
    let outside = || {
        format!(
            "console log `{}` is outside the agent's console directories ({}); start the agent with --console-dir",
            t.path,
            policy
                .allowed()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if !policy.permits(path) {
        return Err(outside());
    }
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(|e| format!("cannot open console log `{}`: {e}", t.path))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read console log `{}`: {e}", t.path))?;
    if !meta.is_file() {
        return Err(format!("console log `{}` is not a regular file", t.path));
    }
    // Where the opened file really is: a directory swapped for a link after the check above
    // does not lead out.
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())) {
        Ok(real) if policy.permits(&real) => {}
        Ok(_) => return Err(outside()),
        Err(e) => {
            return Err(format!(
                "cannot tell where console log `{}` is: {e}",
                t.path
            ));
        }
    }
    let len = meta.len();
    let file = Some((meta.dev(), meta.ino()));
    if t.file.is_some() && t.file != file {
        // Rotated: a new file, read from its start.
        t.offset = Some(u64::MAX);
    }
    t.file = file;
    let mut lines = Vec::new();
    // Reading starts inside a line on the first look and after a skip: its part is dropped.
    let mut mid_line = t.offset.is_none();
    let mut at = match t.offset {
        None => len.saturating_sub(START_BYTES),
        Some(o) if o > len => {
            // Shorter than what was read: rotated or truncated, read from its start.
            t.partial.clear();
            lines.push("[console log rotated or truncated; reading from its start]".to_owned());
            0
        }
        Some(o) => o,
    };
    if len - at > POLL_BYTES {
        let skip = len - POLL_BYTES - at;
        t.partial.clear();
        lines.push(format!("[{skip} bytes of console left out]"));
        at = len - POLL_BYTES;
        mid_line = true;
    }
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(at))
        .and_then(|_| (&mut f).take(len - at).read_to_end(&mut buf))
        .map_err(|e| format!("cannot read console log `{}`: {e}", t.path))?;
    t.offset = Some(at + buf.len() as u64);
    let mut rest = buf.as_slice();
    if mid_line && at > 0 {
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => rest = &rest[i + 1..],
            None => rest = &[],
        }
    }
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        t.partial.extend_from_slice(&rest[..i]);
        lines.push(console_text(&std::mem::take(&mut t.partial)));
        rest = &rest[i + 1..];
    }
    t.partial.extend_from_slice(rest);
    if t.partial.len() > PARTIAL_MAX {
        lines.push(console_text(&std::mem::take(&mut t.partial)));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail(dir: &Path) -> (ConsoleTail, std::path::PathBuf) {
        let log = dir.join("n1.log");
        let mut t = ConsoleTail::new(PathPolicy::new([dir.to_path_buf()]));
        t.set(vec![ConsoleSource {
            name: "n1".into(),
            path: log.display().to_string(),
        }]);
        (t, log)
    }

    fn append(p: &Path, b: &[u8]) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
            .write_all(b)
            .unwrap();
    }

    fn lines(t: &mut ConsoleTail) -> Vec<String> {
        t.poll().into_iter().flat_map(|c| c.lines).collect()
    }

    #[test]
    fn new_lines_are_sent_once_partial_lines_wait_and_escapes_go() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, log) = tail(dir.path());
        // Missing: said once.
        let first = t.poll();
        assert_eq!(first.len(), 1);
        assert!(
            first[0].error.as_deref().unwrap().contains("cannot open"),
            "{first:?}"
        );
        assert!(t.poll().is_empty(), "the same error is not sent again");
        append(&log, b"\x1b[2JSeaBIOS\r\nBooting from ROM");
        assert_eq!(lines(&mut t), ["SeaBIOS"]);
        append(&log, b"...\nlogin: ");
        assert_eq!(lines(&mut t), ["Booting from ROM..."]);
        assert!(t.poll().is_empty());
        // The same set again keeps the place.
        t.set(vec![ConsoleSource {
            name: "n1".into(),
            path: log.display().to_string(),
        }]);
        append(&log, b"root\n");
        assert_eq!(lines(&mut t), ["login: root"]);
    }

    #[test]
    fn a_new_source_starts_near_the_end_and_a_far_behind_one_skips_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("n1.log");
        let old: String = (0..2000).map(|i| format!("old line {i}\n")).collect();
        append(&log, old.as_bytes());
        let (mut t, _) = tail(dir.path());
        let got = lines(&mut t);
        assert_eq!(got.last().unwrap(), "old line 1999");
        assert!(
            got.len() < 1000 && got[0].starts_with("old line "),
            "only the end, from a line's start: {:?}",
            &got[..3]
        );
        append(&log, &vec![b'x'; 200 * 1024]);
        append(&log, b"\nafter\n");
        let got = lines(&mut t);
        assert!(got[0].contains("bytes of console left out"), "{:?}", got[0]);
        assert_eq!(got.last().unwrap(), "after");
    }

    #[test]
    fn a_truncated_log_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, log) = tail(dir.path());
        append(&log, b"one\ntwo\n");
        assert_eq!(lines(&mut t), ["one", "two"]);
        std::fs::write(&log, b"new\n").unwrap();
        assert_eq!(
            lines(&mut t),
            [
                "[console log rotated or truncated; reading from its start]",
                "new"
            ]
        );
        // Rotated: a new file in its place, longer than what was read of the old one.
        std::fs::rename(&log, dir.path().join("n1.log.1")).unwrap();
        append(&log, b"first of the new log\nsecond\n");
        assert_eq!(
            lines(&mut t),
            [
                "[console log rotated or truncated; reading from its start]",
                "first of the new log",
                "second"
            ]
        );
    }

    #[test]
    fn a_link_a_fifo_and_a_path_outside_the_directories_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("consoles");
        std::fs::create_dir(&allowed).unwrap();
        let secret = dir.path().join("key.pem");
        std::fs::write(&secret, "PRIVATE KEY\n").unwrap();
        std::os::unix::fs::symlink(&secret, allowed.join("link.log")).unwrap();
        std::os::unix::fs::symlink(dir.path(), allowed.join("up")).unwrap();
        nix::unistd::mkfifo(&allowed.join("fifo.log"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut t = ConsoleTail::new(PathPolicy::new([allowed.clone()]));
        let src = |name: &str, p: std::path::PathBuf| ConsoleSource {
            name: name.into(),
            path: p.display().to_string(),
        };
        t.set(vec![
            src("link", allowed.join("link.log")),
            src("up", allowed.join("up/key.pem")),
            src("fifo", allowed.join("fifo.log")),
        ]);
        // A FIFO nobody writes to does not block the poll.
        let got = t.poll();
        assert_eq!(got.len(), 3, "{got:?}");
        for c in &got {
            assert!(c.lines.is_empty(), "{c:?}");
            let e = c.error.as_deref().unwrap();
            match c.name.as_str() {
                "fifo" => assert!(e.contains("not a regular file"), "{e}"),
                _ => assert!(e.contains("outside") || e.contains("cannot open"), "{e}"),
            }
        }
        // Said once; and again after a new set (a new session).
        assert!(t.poll().is_empty());
        t.set(vec![src("fifo", allowed.join("fifo.log"))]);
        assert_eq!(t.poll().len(), 1);
    }

    #[test]
    fn an_error_that_goes_is_said_to_have_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, log) = tail(dir.path());
        assert!(t.poll()[0].error.is_some());
        std::fs::write(&log, b"").unwrap();
        let got = t.poll();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].error.is_none() && got[0].lines.is_empty());
    }

    #[test]
    fn a_path_outside_the_allowed_directories_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = ConsoleTail::new(PathPolicy::new([dir.path().join("allowed")]));
        t.set(vec![ConsoleSource {
            name: "n1".into(),
            path: "/etc/shadow".into(),
        }]);
        let got = t.poll();
        assert!(got[0].lines.is_empty());
        assert!(
            got[0]
                .error
                .as_deref()
                .unwrap()
                .contains("outside the agent's console directories"),
            "{got:?}"
        );
    }
}
