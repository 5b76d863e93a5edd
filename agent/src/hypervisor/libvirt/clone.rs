//! Volumes cloned from an image, and LVM volumes cleared before a guest may read them: the
//! records the agent keeps of both in its state directory, and the clone itself through
//! `ferric_images`' write pipeline.

use super::{LibvirtConfig, err};
use crate::driver::DriverError;
use ferric_proto::plan::{ErrorKind, VolumeImage};
use std::path::PathBuf;

fn is_block_device(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Clears a block device from `offset` on: an LVM volume is carved from extents that may hold
/// a deleted volume's data, which no guest may read.
fn zero_from(path: &str, offset: u64) -> Result<(), DriverError> {
    ferric_images::write::zero_device_from(std::path::Path::new(path), offset)
        .map(|_| ())
        .map_err(|e| err(ErrorKind::Io, format!("clear {path}: {e}")))
}

/// What the agent knows of a volume cloned from an image: `<name>.writing` while the clone
/// runs, `<name>` holding the image's checksum once it is complete; and of an LVM volume being
/// cleared: `<name>.zeroing`, holding the offset from which it is, until it is done.
pub(super) struct CloneRecord {
    done: PathBuf,
    writing: PathBuf,
    pub(super) zeroing: PathBuf,
}

pub(super) enum CloneState {
    /// Cloned from this image.
    Done,
    /// A clone started and did not finish.
    Interrupted,
    /// Not cloned by Ferric (or from another image).
    None,
}

impl CloneRecord {
    pub(super) fn new(cfg: &LibvirtConfig, pool: &str, name: &str) -> CloneRecord {
        let dir = cfg.state_dir.join("volume-images").join(pool);
        CloneRecord {
            done: dir.join(name),
            writing: dir.join(format!("{name}.writing")),
            zeroing: dir.join(format!("{name}.zeroing")),
        }
    }

    /// Notes, before the volume is made or grown, that it must be cleared from `offset`: an
    /// agent stopped (or a step timed out) halfway clears it again on the next run, instead of
    /// handing out old data.
    pub(super) fn zeroing_from(&self, offset: u64) -> Result<(), DriverError> {
        let io = |e: std::io::Error| {
            err(
                ErrorKind::Io,
                format!("write {}: {e}", self.zeroing.display()),
            )
        };
        if let Some(dir) = self.zeroing.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&self.zeroing, offset.to_string()).map_err(io)
    }

    /// Where an unfinished clearing started, if one is noted.
    pub(super) fn pending_zero(&self) -> Option<u64> {
        std::fs::read_to_string(&self.zeroing)
            .ok()
            .map(|s| s.trim().parse().unwrap_or(0))
    }

    /// Clears the device at `path` from `offset`, then forgets the note.
    pub(super) fn zero(&self, path: &str, offset: u64) -> Result<(), DriverError> {
        zero_from(path, offset)?;
        let _ = std::fs::remove_file(&self.zeroing);
        Ok(())
    }

    pub(super) fn state(&self, checksum: &str) -> CloneState {
        if std::fs::read_to_string(&self.done).is_ok_and(|c| c.trim() == checksum) {
            CloneState::Done
        } else if self.writing.exists() {
            CloneState::Interrupted
        } else {
            CloneState::None
        }
    }

    /// Whether Ferric cloned (or was cloning) an image into this volume: it made it.
    pub(super) fn made(&self) -> bool {
        self.done.exists() || self.writing.exists()
    }

    pub(super) fn clear(&self) {
        let _ = std::fs::remove_file(&self.done);
        let _ = std::fs::remove_file(&self.writing);
        let _ = std::fs::remove_file(&self.zeroing);
    }
}

fn image_err(img: &VolumeImage, e: ferric_images::inspect::ImageError) -> DriverError {
    use ferric_images::inspect::ImageError as E;
    let kind = match e {
        E::Io(_) => ErrorKind::Io,
        _ => ErrorKind::InvalidSpec,
    };
    err(kind, format!("image {}: {e}", img.url))
}

/// Writes `img` into the volume file at `path` (the disk, then grown to `size_bytes`), checked
/// against its checksum before the volume counts as cloned.
pub(super) fn clone_image(
    path: &str,
    img: &VolumeImage,
    size_bytes: u64,
    record: &CloneRecord,
    state_dir: &std::path::Path,
) -> Result<(), DriverError> {
    use ferric_images::inspect::Format;
    use ferric_images::source::{ImageSource, SourceReader, parse_checksum};
    let io = |what: &str, e: std::io::Error| err(ErrorKind::Io, format!("{what}: {e}"));
    if let Some(dir) = record.writing.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(&format!("create {}", dir.display()), e))?;
    }
    let declared = img
        .format
        .as_deref()
        .map(Format::parse)
        .transpose()
        .map_err(|e| err(ErrorKind::InvalidSpec, format!("field `image.format`: {e}")))?;
    let expected = parse_checksum(&img.checksum).map_err(|e| {
        err(
            ErrorKind::InvalidSpec,
            format!("field `image.checksum`: {e}"),
        )
    })?;
    std::fs::write(&record.writing, &img.checksum)
        .map_err(|e| io(&format!("write {}", record.writing.display()), e))?;
    let _ = std::fs::remove_file(&record.done);
    // An image on the coordinator is fetched over its TLS API with this agent's certificate
    // (its image credential) and the coordinator's CA trusted; a driver run without an
    // identity (its own tests) fetches as anyone; an identity that is there but unreadable is
    // an error, not a silent anonymous fetch.
    let identity = match crate::tls::Identity::load(state_dir) {
        Ok(i) => Some(i),
        Err(crate::tls::TlsError::NotEnrolled(_)) => None,
        Err(e) => {
            return Err(err(
                ErrorKind::Io,
                format!("image {}: the agent's identity: {e}", img.url),
            ));
        }
    };
    let http = ferric_images::source::HttpOptions {
        roots: identity.iter().map(|i| i.ca_der.to_vec()).collect(),
        identity_pem: identity.as_ref().map(crate::tls::Identity::client_pem),
        ..Default::default()
    };
    let mut source = ImageSource::parse(&img.url).open_with(&http).map_err(|e| {
        err(
            ErrorKind::Unreachable,
            format!("image {}: cannot be fetched: {e}", img.url),
        )
    })?;
    // The disk must fit the volume before a byte is written.
    let inspection = ferric_images::inspect::inspect(&mut SourceReader::new(&mut *source))
        .map_err(|e| image_err(img, e))?;
    if let Some(v) = inspection.virtual_size
        && v > size_bytes
    {
        return Err(err(
            ErrorKind::InvalidSpec,
            format!(
                "field `size_bytes`: the volume would be {size_bytes} bytes but the disk in {} is {v}",
                img.url
            ),
        ));
    }
    let opts = ferric_images::write::WriteOptions {
        declared,
        expected: Some(expected),
        direct: None,
    };
    let report = ferric_images::write::write_from(
        &mut *source,
        std::path::Path::new(path),
        &opts,
        &mut |_| {},
    )
    .map_err(|e| image_err(img, e))?;
    if report.virtual_size > size_bytes {
        return Err(err(
            ErrorKind::InvalidSpec,
            format!(
                "field `size_bytes`: the volume is {size_bytes} bytes but the disk in {} is {}",
                img.url, report.virtual_size
            ),
        ));
    }
    if is_block_device(path) {
        // The device keeps its size; past the disk it keeps old bytes, which are cleared.
        zero_from(path, report.virtual_size)?;
    } else {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io(&format!("open {path}"), e))?;
        f.set_len(size_bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&format!("grow {path}"), e))?;
    }
    std::fs::write(&record.done, &img.checksum)
        .map_err(|e| io(&format!("write {}", record.done.display()), e))?;
    let _ = std::fs::remove_file(&record.writing);
    tracing::info!(volume = %path, image = %img.url, written = report.written, resumes = report.resumes, "volume cloned from image");
    Ok(())
}
