//! What every soak driver shares: sampling a node until its figures settle, the rows of the
//! soak's table and the recorder that prints them, and the soak's error.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::sample::{growth, Sample, Tolerance};
use crate::client::Credentials;

/// Why a soak could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// A node or a step failed.
    #[error("{0}")]
    Failed(String),
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// One row of the soak's table.
#[derive(Clone, Debug)]
pub struct Row {
    /// The cycle (0 is the baseline).
    pub cycle: u32,
    /// The node's HTTP address.
    pub node: String,
    /// Its figures.
    pub sample: Sample,
}

/// The soak's HTTP client: one scheme and one set of credentials for every node it talks to.
pub(crate) struct Http {
    client: reqwest::Client,
    scheme: &'static str,
}

impl Http {
    /// A client with `credentials` (HTTPS with a CA, a client certificate, a token).
    pub(crate) fn new(credentials: &Credentials) -> Result<Http, SoakError> {
        let client = credentials
            .http_client(Duration::from_secs(10))
            .map_err(|e| SoakError::Failed(e.to_string()))?;
        Ok(Http {
            client,
            scheme: credentials.scheme(),
        })
    }

    /// A request of `method` to `path` on the node at `addr`.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}://{addr}{path}", self.scheme))
    }

    pub(crate) fn get(&self, addr: &str, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, addr, path)
    }
}

pub(crate) async fn scrape(client: &Http, addr: &str) -> Result<Sample, SoakError> {
    let text = client
        .get(addr, "/metrics")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| SoakError::Failed(format!("scrape of {addr} failed: {e}")))?
        .text()
        .await
        .map_err(|e| SoakError::Failed(format!("scrape of {addr} failed: {e}")))?;
    Ok(Sample::parse(&text))
}

/// Samples `addr` until the exact figures match `baseline` (or, without one, until two samples
/// in a row agree), or until `settle` passes; returns the last sample.
pub(crate) async fn settled(
    client: &Http,
    addr: &str,
    baseline: Option<&Sample>,
    settle: Duration,
) -> Result<Sample, SoakError> {
    let until = Instant::now() + settle;
    let mut last = scrape(client, addr).await?;
    loop {
        let done = match baseline {
            Some(b) => growth(
                b,
                &last,
                Tolerance {
                    rss_bytes: i64::MAX,
                    rss_ratio: 0.0,
                },
            )
            .is_empty(),
            None => false,
        };
        if done || Instant::now() >= until {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let next = scrape(client, addr).await?;
        if baseline.is_none() && exact(&next) == exact(&last) {
            return Ok(next);
        }
        last = next;
    }
}

fn exact(s: &Sample) -> (i64, i64, i64, i64, i64, i64) {
    (s.tasks, s.threads, s.connections, s.fds, s.leaks, s.leads)
}

/// Collects rows, drives the progress bar and prints the table.
pub(crate) struct Recorder {
    bar: ProgressBar,
    quiet: bool,
    pub rows: Vec<Row>,
}

impl Recorder {
    pub(crate) fn new(total: u64, quiet: bool) -> Recorder {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} cycles {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        let rec = Recorder {
            bar,
            quiet,
            rows: Vec::new(),
        };
        if !quiet {
            rec.line(format!(
                "{:>6} {:>15} {:>7} {:>8} {:>12} {:>6} {:>9} {:>6} {:>5}",
                "cycle",
                "node",
                "tasks",
                "threads",
                "connections",
                "fds",
                "rss_mib",
                "leaks",
                "leads"
            ));
        }
        rec
    }

    /// A table row: above the bar on a terminal, plain stdout otherwise (the bar is hidden
    /// there and would swallow it).
    fn line(&self, text: String) {
        if self.bar.is_hidden() {
            println!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    pub(crate) fn record(&mut self, cycle: u32, node: &str, s: Sample) {
        if !self.quiet {
            self.line(format!(
                "{:>6} {:>15} {:>7} {:>8} {:>12} {:>6} {:>9.1} {:>6} {:>5}",
                cycle,
                node,
                s.tasks,
                s.threads,
                s.connections,
                s.fds,
                s.rss_bytes as f64 / (1 << 20) as f64,
                s.leaks,
                s.leads
            ));
        }
        self.rows.push(Row {
            cycle,
            node: node.to_string(),
            sample: s,
        });
    }

    /// Clears the progress bar at the end.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub(crate) fn tick(&self, msg: String) {
        self.bar.inc(1);
        self.bar.set_message(msg);
    }
}
