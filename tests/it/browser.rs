//! What the browser tests share: starting peers, `chromedriver` with a
//! headless Chromium, and reading and clicking pages.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use warden_tests::{free_port, Proc};

pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
    let quiet = std::env::var_os("WARDEN_TEST_LOG").is_none();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc {
        child,
        name: name.into(),
    }
}

pub fn wait_port(addr: SocketAddr, p: &mut Proc) {
    if let Err(e) = warden_tests::wait_listening(p, &[addr.port()], Duration::from_secs(30)) {
        panic!("{e}");
    }
}

/// `chromedriver` and the browsers it starts, ended on drop (the browsers
/// by the id of every process using this test's profile directory). Their
/// temporary files go to `_scratch` (their `TMPDIR`), removed with it: a
/// browser ended by SIGKILL leaves its `org.chromium.*` directories behind.
pub struct Driver {
    proc: Proc,
    port: u16,
    profile: tempfile::TempDir,
    _scratch: tempfile::TempDir,
}

impl Driver {
    pub fn start() -> Driver {
        assert!(
            Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists(),
            "Chromium missing: run scripts/setup.sh (Debian packages chromium, chromium-driver)"
        );
        let port = free_port();
        let scratch = tempfile::tempdir().expect("scratch");
        let mut proc = spawn(
            "chromedriver",
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                .env("TMPDIR", scratch.path()),
        );
        wait_port(
            format!("127.0.0.1:{port}").parse().expect("addr"),
            &mut proc,
        );
        Driver {
            proc,
            port,
            profile: tempfile::tempdir().expect("profile"),
            _scratch: scratch,
        }
    }

    pub async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1440,1000",
                         format!("--user-data-dir={}", self.profile.path().display())],
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS stack (and no
        // process-wide crypto provider to choose) is involved.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        // Browsers left behind: every process whose command line names the profile.
        let mark = self.profile.path().display().to_string();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&mark) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}

pub async fn text_of(c: &Client, css: &str) -> String {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(e) => panic!(
            "{css}: {e} at {:?}:\n{}",
            c.current_url().await.map(|u| u.to_string()),
            c.source().await.unwrap_or_default()
        ),
    }
}

/// Clicks `css` (a submit button or a link) and waits for the next page.
pub async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.expect("a page");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.text().await.is_ok() {
        assert!(Instant::now() < deadline, "clicking {css} led nowhere");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("body"))
        .await
        .expect("the next page");
}
