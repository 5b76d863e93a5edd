//! `ferric image …`: the coordinator's image store, and the write pipeline on this machine.

use super::Client;
use super::output::{human_bytes, print_item, print_json, print_list};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// `ferric image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Upload an image file; it is inspected here and again by the coordinator, and refused
    /// when unsafe (backing files, external data files, headers that lie…).
    Upload {
        /// The image file.
        file: PathBuf,
        /// Name to store it under.
        #[arg(long)]
        name: String,
        /// Declared format (raw, qcow2, …); content that differs is refused.
        #[arg(long)]
        format: Option<String>,
        /// Expected checksum of the file, `sha256:HEX` or `sha512:HEX`.
        #[arg(long)]
        checksum: Option<String>,
    },
    /// List stored images.
    List,
    /// Show one image.
    Show {
        /// Name.
        name: String,
    },
    /// Delete an image (its content goes when no other name refers to it).
    Delete {
        /// Name.
        name: String,
    },
    /// Write an image (a file or an http(s) URL) to a block device or a file here, with the
    /// pipeline the deploy ramdisk uses: inspected first, decoded as it streams, zeros
    /// skipped, checksum verified before success.
    Write {
        /// Image file or URL (for example `https://ctl:7180/images/sha256/<hex>`: one of the
        /// coordinator's is fetched with the CLI's CA and token).
        source: String,
        /// Block device or file to write the disk to.
        target: PathBuf,
        /// Declared format; content that differs is refused.
        #[arg(long)]
        format: Option<String>,
        /// Expected checksum of the image, `sha256:HEX` or `sha512:HEX`.
        #[arg(long)]
        checksum: Option<String>,
        /// Write with O_DIRECT (the default on a block device).
        #[arg(long, conflicts_with = "buffered")]
        direct: bool,
        /// Write through the page cache (the default on a file).
        #[arg(long)]
        buffered: bool,
    },
}

/// `ferric image …`.
pub(super) async fn run(client: &Client, cmd: ImageCmd, json: bool) -> Result<()> {
    use ferric_api::images::ImageView;
    let show = |i: &ImageView| {
        format!(
            "name:         {}\nformat:       {}{}\nvirtual size: {}\nsize:         {}\nsha256:       {}\nsha512:       {}\ndetails:      {}\npath:         {}",
            i.name,
            i.format,
            i.wrapper
                .as_deref()
                .map(|w| format!(" (in {w})"))
                .unwrap_or_default(),
            i.virtual_size
                .map(human_bytes)
                .unwrap_or_else(|| "-".into()),
            human_bytes(i.size),
            i.sha256,
            i.sha512,
            i.details.join(" "),
            i.path,
        )
    };
    match cmd {
        ImageCmd::Upload {
            file,
            name,
            format,
            checksum,
        } => {
            ferric_api::images::check_name(&name)?;
            // Refuse here what the coordinator would refuse, before sending a byte.
            let declared = ferric_images::inspect::Format::parse_declared(format.as_deref())?;
            let mut f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let inspection = match declared {
                Some(d) => ferric_images::inspect::inspect_as(&mut f, d),
                None => ferric_images::inspect::inspect(&mut f),
            }
            .with_context(|| format!("{} refused", file.display()))?;
            drop(f);
            // A taken name is refused before a byte of a large file is sent.
            if client
                .get::<ImageView>(&format!("/v1/images/{name}"))
                .await
                .is_ok()
            {
                bail!("an image named `{name}` exists; delete it first");
            }
            let view = super::wait::upload_image(
                client,
                &file,
                &name,
                format.as_deref(),
                checksum.as_deref(),
            )
            .await?;
            if json {
                return print_json(&view);
            }
            eprintln!(
                "{} stored as `{}` ({}, {})",
                file.display(),
                view.name,
                inspection.format.as_str(),
                human_bytes(view.size)
            );
            println!("{}", show(&view));
        }
        ImageCmd::Write {
            source,
            target,
            format,
            checksum,
            direct,
            buffered,
        } => {
            let direct = match (direct, buffered) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let http = client.http_options_for(&source).unwrap_or_default();
            let report =
                write_image_here(&source, &http, &target, format, checksum, direct).await?;
            if json {
                return print_json(&serde_json::json!({
                    "format": report.inspection.format,
                    "wrapper": report.inspection.wrapper,
                    "virtual_size": report.virtual_size,
                    "written": report.written,
                    "zeros_skipped": report.zeros_skipped,
                    "digest": report.digest,
                    "source_bytes": report.source_bytes,
                    "resumes": report.resumes,
                }));
            }
            println!(
                "{} written to {}: {} of disk, {} of data written, {} zeros skipped{}{}",
                source,
                target.display(),
                human_bytes(report.virtual_size),
                human_bytes(report.written),
                human_bytes(report.zeros_skipped),
                report
                    .digest
                    .map(|d| format!(", checksum {d} verified"))
                    .unwrap_or_default(),
                if report.resumes > 0 {
                    format!(", {} resumed transfers", report.resumes)
                } else {
                    String::new()
                }
            );
        }
        ImageCmd::List => {
            let images: Vec<ImageView> = client.get("/v1/images").await?;
            return print_list(
                json,
                &images,
                &["IMAGE", "FORMAT", "VIRTUAL", "SIZE", "CHECKSUM"],
                |i| {
                    vec![
                        i.name.clone(),
                        match &i.wrapper {
                            Some(w) => format!("{}+{w}", i.format),
                            None => i.format.clone(),
                        },
                        i.virtual_size
                            .map(human_bytes)
                            .unwrap_or_else(|| "-".into()),
                        human_bytes(i.size),
                        format!("sha256:{}", &i.sha256[..16.min(i.sha256.len())]),
                    ]
                },
            );
        }
        ImageCmd::Show { name } => {
            let i: ImageView = client.get(&format!("/v1/images/{name}")).await?;
            print_item(json, &i, show)?;
        }
        ImageCmd::Delete { name } => {
            let i: ImageView = client.delete(&format!("/v1/images/{name}")).await?;
            print_item(json, &i, |i| format!("image `{}` deleted", i.name))?;
        }
    }
    Ok(())
}

/// `ferric image write`: the write pipeline on this machine, with progress on a terminal.
async fn write_image_here(
    source: &str,
    http: &ferric_images::source::HttpOptions,
    target: &std::path::Path,
    format: Option<String>,
    checksum: Option<String>,
    direct: Option<bool>,
) -> Result<ferric_images::write::WriteReport> {
    use ferric_images::write::{WriteOptions, write_from};
    use std::io::IsTerminal;
    let declared = ferric_images::inspect::Format::parse_declared(format.as_deref())?;
    let expected = checksum
        .as_deref()
        .map(ferric_images::source::parse_checksum)
        .transpose()?;
    let opts = WriteOptions {
        declared,
        expected,
        direct,
    };
    let src = ferric_images::source::ImageSource::parse(source);
    let target = target.to_owned();
    let http = http.clone();
    let tty = std::io::stderr().is_terminal();
    tokio::task::spawn_blocking(move || {
        let mut shown = std::time::Instant::now();
        let mut progress = |p: ferric_images::write::Progress| {
            if tty && shown.elapsed().as_millis() >= 200 {
                shown = std::time::Instant::now();
                let eta = p.eta();
                eprint!(
                    "\r{} / {} ({}/s{})   ",
                    human_bytes(p.done),
                    human_bytes(p.total),
                    human_bytes(p.bytes_per_sec() as u64),
                    if eta == Duration::MAX {
                        String::new()
                    } else {
                        format!(", ETA {}s", eta.as_secs())
                    }
                );
            }
        };
        let r = src
            .open_with(&http)
            .map_err(ferric_images::inspect::ImageError::from)
            .and_then(|mut s| write_from(&mut *s, &target, &opts, &mut progress));
        if tty {
            eprintln!();
        }
        r.with_context(|| format!("cannot write {src} to {}", target.display()))
    })
    .await
    .context("the write task failed")?
}
