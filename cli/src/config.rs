//! Where the CLI finds its coordinator, the CA it pins and its API token: flags and
//! environment first (`--api`/`FERRIC_API`, `--ca`/`FERRIC_CA`, `--token`/`FERRIC_TOKEN`), then
//! a config file (`--config` / `FERRIC_CONFIG`, else `~/.config/ferric/config.toml`, else the
//! coordinator's own `/var/lib/ferric/admin.conf` when this user may read it).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The default API address.
pub const DEFAULT_API: &str = "https://127.0.0.1:7180";

/// The CA a coordinator on this host keeps (used when none is named and this user may read it).
pub const DEFAULT_CA: &str = "/var/lib/ferric/ca.pem";

/// A config file: `api = "https://HOST:PORT"`, `ca = "PATH"` (the coordinator's `ca.pem`, the
/// only CA then trusted; relative to the file) and `token = "ID.SECRET"`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The API's base URL.
    pub api: Option<String>,
    /// The coordinator's CA certificate (PEM file).
    pub ca: Option<PathBuf>,
    /// The API token.
    pub token: Option<String>,
}

/// Reads a config file; one others may read is used, with a warning.
pub fn read(path: &Path) -> Result<ConfigFile> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    if let Ok(m) = std::fs::metadata(path)
        && m.is_file()
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} holds an API token and others may read it: `chmod 600` it",
            path.display()
        );
    }
    toml::from_str(&text).with_context(|| format!("{} is not a Ferric config file", path.display()))
}

/// The config file to use: the one named, or the first that exists of the defaults.
pub fn locate(named: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = named {
        if !p.exists() {
            bail!("the config file {} does not exist", p.display());
        }
        return Ok(Some(p.to_owned()));
    }
    let mut candidates = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        candidates.push(PathBuf::from(x).join("ferric/config.toml"));
    } else if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        candidates.push(PathBuf::from(h).join(".config/ferric/config.toml"));
    }
    candidates.push(PathBuf::from("/var/lib/ferric").join(ferric_api::ADMIN_CONF));
    Ok(candidates
        .into_iter()
        .find(|c| std::fs::File::open(c).is_ok()))
}

/// Where and how the CLI reaches its coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The API's base URL.
    pub api: String,
    /// The CA to pin (`None`: the system's CAs).
    pub ca: Option<PathBuf>,
    /// The API token.
    pub token: Option<String>,
}

impl Endpoint {
    /// The API client.
    pub fn client(&self) -> Result<ferric_api::client::Client> {
        let pem = match &self.ca {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read the CA file {}", p.display()))?,
            ),
            None => None,
        };
        Ok(ferric_api::client::Client::connect(
            &self.api,
            self.token.as_deref(),
            pem.as_deref(),
        )?)
    }
}

/// The endpoint, the CA and the token to use.
pub fn resolve(
    api: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
    config: Option<&Path>,
) -> Result<Endpoint> {
    let located = locate(config)?;
    let file = match &located {
        Some(p) if api.is_none() || token.is_none() || ca.is_none() => read(p)?,
        _ => ConfigFile::default(),
    };
    let base = located
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_default();
    let ca = ca.or(file.ca.map(|c| base.join(c))).or_else(|| {
        let d = PathBuf::from(DEFAULT_CA);
        std::fs::File::open(&d).is_ok().then_some(d)
    });
    let api = api.or(file.api).unwrap_or_else(|| DEFAULT_API.to_owned());
    Ok(Endpoint {
        api,
        ca,
        token: token.or(file.token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "api = \"https://10.0.0.1:7180\"\nca = \"ca.pem\"\ntoken = \"a.b\"\n",
        )
        .unwrap();
        assert_eq!(
            resolve(None, None, None, Some(&f)).unwrap(),
            Endpoint {
                api: "https://10.0.0.1:7180".into(),
                ca: Some(dir.path().join("ca.pem")),
                token: Some("a.b".into())
            }
        );
        assert_eq!(
            resolve(
                Some("https://x:1".into()),
                Some("c.d".into()),
                Some("/etc/c.pem".into()),
                Some(&f)
            )
            .unwrap(),
            Endpoint {
                api: "https://x:1".into(),
                ca: Some("/etc/c.pem".into()),
                token: Some("c.d".into())
            }
        );
        std::fs::write(&f, "tokn = \"a.b\"\n").unwrap();
        let e = resolve(None, None, None, Some(&f)).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a Ferric config file"),
            "{e:#}"
        );
        let e = resolve(None, None, None, Some(&dir.path().join("missing"))).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
