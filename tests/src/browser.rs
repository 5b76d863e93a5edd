//! A real browser for the dashboard tests: Debian's headless Chromium driven over WebDriver by
//! its `chromedriver`, through `fantoccini`. Screenshots go to `target/artifacts/<suite>/`,
//! kept after the run for people to look at.

use crate::{Proc, free_port, wait_for};
use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session, its driver stopped when dropped.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session of a 1366×900 window
    /// that accepts the coordinator's certificate (its CA is the test's own); screenshots go
    /// to `target/artifacts/<suite>/`.
    pub async fn start(suite: &str) -> Result<Self> {
        for (p, pkg) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(p).exists() {
                bail!("{p} is missing (Debian package {pkg}; `cargo xtask setup` installs it)");
            }
        }
        let shots = crate::hv::target_dir()?.join("artifacts").join(suite);
        std::fs::create_dir_all(&shots)?;
        let port = free_port()?;
        let profile = tempfile::tempdir()?;
        let driver = Proc::spawn(
            Path::new(CHROMEDRIVER),
            &[&format!("--port={port}")],
            &shots.join("chromedriver.log"),
        )?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_for(
            Duration::from_secs(20),
            "chromedriver to answer",
            || async {
                Ok(http
                    .get(format!("{url}/status"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            },
        )
        .await?;
        let caps = serde_json::json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Tests run as root, where Chromium's own sandbox cannot start.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            bail!("capabilities are an object");
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .with_context(|| format!("cannot open a Chromium session through {url}"))?;
        Ok(Browser {
            client,
            _driver: driver,
            _profile: profile,
            shots,
        })
    }

    /// Saves a screenshot of the top of the page as `<name>.png`; returns its path.
    pub async fn shot(&self, name: &str) -> Result<PathBuf> {
        self.client.execute("window.scrollTo(0, 0)", vec![]).await?;
        self.snap(name).await
    }

    /// Saves a screenshot as `<name>.png` with the first element matching `css` at the top.
    pub async fn shot_of(&self, name: &str, css: &str) -> Result<PathBuf> {
        self.client
            .execute(
                "const e = document.querySelector(arguments[0]); if (e) e.scrollIntoView(true);",
                vec![serde_json::Value::String(css.to_owned())],
            )
            .await?;
        self.snap(name).await
    }

    async fn snap(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Waits up to `limit` for an element matching `css`.
    pub async fn wait_css(
        &self,
        css: &str,
        limit: Duration,
    ) -> Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(limit)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no `{css}` on the page within {limit:?}"))
    }

    /// The elements matching `css` now.
    pub async fn all(&self, css: &str) -> Result<Vec<fantoccini::elements::Element>> {
        Ok(self.client.find_all(Locator::Css(css)).await?)
    }

    /// The text of the first element matching `css` now, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let e = self.client.find(Locator::Css(css)).await.ok()?;
        e.text().await.ok()
    }

    /// The page's whole visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await.unwrap_or_default()
    }

    /// The page's text, after checking it shows no value the script failed to render
    /// (`[object …]`, `undefined`, `NaN`).
    pub async fn rendered_text(&self) -> Result<String> {
        let t = self.page_text().await;
        for bad in ["[object ", "undefined", "NaN"] {
            if t.contains(bad) {
                bail!("the page shows `{bad}`: {t}");
            }
        }
        Ok(t)
    }

    /// Ends the session.
    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}
