//! The deploy ramdisk as the tests boot it: `ferric-ramdisk build` of this workspace's binary
//! with Debian's generic kernel, cached under `target/ramdisk/<tag>` (the tag follows the
//! binary, so a rebuilt binary gets a new ramdisk). The ramdisk trusts the tests' own image
//! CA ([`image_ca`]) as an operator's ramdisk trusts theirs (`ferric-ramdisk build --ca`).

use crate::hv::target_dir;
use anyhow::Result;
use std::path::PathBuf;

/// The directory holding `vmlinuz` and `initramfs`.
pub fn image() -> Result<PathBuf> {
    let binary = crate::bin("ferric-ramdisk")?;
    let meta = std::fs::metadata(&binary)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let root = target_dir()?.join("ramdisk");
    std::fs::create_dir_all(&root)?;
    // Tests run side by side: one builds, the others wait.
    let lock = std::fs::File::create(root.join(".lock"))?;
    lock.lock()?;
    let ca = image_ca_files(&root)?;
    let ca_tag = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(std::fs::read(&ca.0)?)[..4])
    };
    let out = root.join(format!("{mtime:x}-{:x}-{ca_tag}", meta.len()));
    if out.join("initramfs").exists() && out.join("vmlinuz").exists() {
        return Ok(out);
    }
    let kernel = crate::node::generic_kernel_package()?;
    ferric_ramdisk::build::build(&ferric_ramdisk::build::BuildOptions {
        binary,
        kernel,
        out: out.clone(),
        level: 3,
        cas: vec![ca.0],
    })?;
    Ok(out)
}

/// The tests' image CA, made once under `root`: its certificate and key (PEM files).
fn image_ca_files(root: &std::path::Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (root.join("image-ca.pem"), root.join("image-ca.key"));
    if !(cert.exists() && key.exists()) {
        let k = rcgen::KeyPair::generate()?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Ferric tests' image CA");
        let c = p.self_signed(&k)?;
        std::fs::write(&key, k.serialize_pem())?;
        std::fs::write(&cert, c.pem())?;
    }
    Ok((cert, key))
}

/// A certificate and key (PEM) for an image server at `ip`, issued by the CA that the
/// ramdisk of [`image`] trusts.
pub fn image_server_cert(ip: std::net::IpAddr) -> Result<(String, String)> {
    let root = target_dir()?.join("ramdisk");
    std::fs::create_dir_all(&root)?;
    let lock = std::fs::File::create(root.join(".lock"))?;
    lock.lock()?;
    let (ca_cert, ca_key) = image_ca_files(&root)?;
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_key)?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca_cert)?, ca_key)?;
    let k = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    let c = p.signed_by(&k, &issuer)?;
    Ok((c.pem(), k.serialize_pem()))
}
