//! The soak's drivers: group and RPC-server cycles on live nodes over HTTP, and process cycles
//! on a cluster of `raftnode serve` children that this module spawns and always reaps.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use super::probe::{scrape, settled, Http, Recorder, SoakError};
use super::sample::Sample;
use crate::client::Credentials;
use crate::harness::process::{self, ServeArgs};
use reqwest::Method;

fn failed(msg: impl Into<String>) -> SoakError {
    SoakError::Failed(msg.into())
}

/// Retries `f` until it yields `Some` or `timeout` passes.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T, SoakError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= until {
            return Err(failed(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_code(req: reqwest::RequestBuilder) -> Option<u16> {
    req.send().await.ok().map(|r| r.status().as_u16())
}

async fn group_has_leader(client: &Http, addr: &str, group: u64) -> bool {
    let Ok(r) = client.get(addr, "/v1/status").send().await else {
        return false;
    };
    let Ok(v) = r.json::<serde_json::Value>().await else {
        return false;
    };
    v["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["id"] == group))
        .is_some_and(|g| !g["leader"].is_null())
}

/// Writes one key through `addr`, retrying while the group has no leader.
async fn write(client: &Http, addr: &str, group: u64, key: &str) -> Result<(), SoakError> {
    eventually(
        Duration::from_secs(20),
        &format!("a write to group {group} through {addr}"),
        || async {
            let req = client
                .request(Method::PUT, addr, &format!("/v1/kv/{group}/{key}"))
                .body("soak");
            (status_code(req).await == Some(200)).then_some(())
        },
    )
    .await
}

async fn group_cycle(client: &Http, addrs: &[String], groups: &[u64]) -> Result<(), SoakError> {
    for g in groups {
        // Last address first: the bootstrapper of group 1 (the lowest id, usually listed first)
        // then starts it when its peers already host it, and the first election succeeds at
        // once; other groups' bootstrappers may wait one election timeout.
        for a in addrs.iter().rev() {
            // Each cycle creates the group anew on every member, after the last one purged it.
            let path = format!("/v1/groups/{g}?fresh=true");
            let code = status_code(client.request(Method::PUT, a, &path)).await;
            if !matches!(code, Some(200 | 201)) {
                return Err(failed(format!(
                    "starting group {g} on {a} answered {code:?}"
                )));
            }
        }
    }
    for g in groups {
        let first = &addrs[0];
        eventually(
            Duration::from_secs(20),
            &format!("a leader of group {g}"),
            || async { group_has_leader(client, first, *g).await.then_some(()) },
        )
        .await?;
        write(client, first, *g, "soak").await?;
    }
    for g in groups {
        for a in addrs {
            let path = format!("/v1/groups/{g}?purge=true");
            let code = status_code(client.request(Method::DELETE, a, &path)).await;
            if code != Some(200) {
                return Err(failed(format!(
                    "stopping group {g} on {a} answered {code:?}"
                )));
            }
        }
    }
    Ok(())
}

async fn sample_all(
    rec: &mut Recorder,
    client: &Http,
    addrs: &[String],
    cycle: u32,
    baselines: &mut Vec<Sample>,
    settle: Duration,
) -> Result<(), SoakError> {
    for (i, a) in addrs.iter().enumerate() {
        let s = settled(client, a, baselines.get(i), settle).await?;
        if baselines.len() <= i {
            baselines.push(s);
        }
        rec.record(cycle, a, s);
    }
    Ok(())
}

pub(crate) async fn group_cycles(
    rec: &mut Recorder,
    client: &Http,
    addrs: &[String],
    ids: &[u64],
    cycles: u32,
    settle: Duration,
) -> Result<(), SoakError> {
    if addrs.is_empty() {
        return Err(failed("--http-addrs names no node"));
    }
    // One cycle before the baseline: the first start creates what is created once (peer
    // channels, pooled threads), which is warm-up, not growth.
    group_cycle(client, addrs, ids).await?;
    let mut baselines = Vec::new();
    sample_all(rec, client, addrs, 0, &mut baselines, settle).await?;
    for c in 1..=cycles {
        group_cycle(client, addrs, ids).await?;
        sample_all(rec, client, addrs, c, &mut baselines, settle).await?;
        rec.tick(format!("group cycle {c}"));
    }
    Ok(())
}

pub(crate) async fn rpc_cycles(
    rec: &mut Recorder,
    client: &Http,
    addrs: &[String],
    cycles: u32,
    offset: u32,
    settle: Duration,
) -> Result<(), SoakError> {
    if cycles == 0 {
        return Ok(());
    }
    let mut baselines = Vec::new();
    if rec.rows.is_empty() {
        sample_all(rec, client, addrs, 0, &mut baselines, settle).await?;
    } else {
        for a in addrs {
            if let Some(r) = rec.rows.iter().find(|r| &r.node == a) {
                baselines.push(r.sample);
            }
        }
    }
    let target = &addrs[0];
    for c in 1..=cycles {
        let path = "/v1/admin/rpc-server/restart";
        let code = status_code(client.request(Method::POST, target, path)).await;
        if code != Some(200) {
            return Err(failed(format!(
                "restarting the gRPC server of {target} answered {code:?}"
            )));
        }
        sample_all(rec, client, addrs, offset + c, &mut baselines, settle).await?;
        rec.tick(format!("RPC server restart {c}"));
    }
    Ok(())
}

pub struct ProcessSpec {
    pub nodes: u64,
    pub signal: StopSignal,
    pub groups: Vec<u64>,
    pub dir: Option<PathBuf>,
    pub binary: Option<PathBuf>,
}

/// How the process soak stops its victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StopSignal {
    /// SIGTERM: the ordered shutdown.
    Term,
    /// SIGKILL: no shutdown at all.
    Kill,
    /// Alternately, SIGTERM first.
    Both,
}

/// One child `raftnode serve`, killed and reaped when dropped.
struct Proc {
    id: u64,
    http: String,
    args: Vec<String>,
    dir: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) -> Result<(), SoakError> {
        let child = process::spawn(&self.binary, &self.args, &[], &self.dir, None)
            .map_err(|e| failed(format!("cannot start {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            process::signal(c.id(), sig);
        }
    }

    async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus, SoakError> {
        let id = self.id;
        let until = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(failed(format!("node {id} is not running")));
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= until {
                return Err(failed(format!("node {id} did not exit within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16, SoakError> {
    process::free_port().map_err(|e| failed(format!("no free loopback port: {e}")))
}

async fn ready(client: &Http, p: &Proc, groups: &[u64]) -> Result<(), SoakError> {
    let addr = p.http.clone();
    eventually(
        Duration::from_secs(30),
        &format!("node {} ready", p.id),
        || async { (status_code(client.get(&addr, "/readyz")).await == Some(200)).then_some(()) },
    )
    .await?;
    for g in groups {
        write(client, &addr, *g, "soak").await?;
    }
    Ok(())
}

/// How long leadership may take to spread back after a restart: the balancer moves one group
/// per round (2 s by default) once the restarted node serves and has caught up.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `leads` (groups led per node) is an even spread of `groups`: every group led, and
/// no node leading two more than another.
fn even(leads: &[i64], groups: usize) -> bool {
    let (min, max) = (leads.iter().min(), leads.iter().max());
    leads.iter().sum::<i64>() == groups as i64
        && min.zip(max).is_some_and(|(min, max)| max - min <= 1)
}

/// Waits until leadership is spread as `want` (the baseline's), or evenly when there is no
/// baseline yet, and returns the spread. A node's task count follows the groups it leads, so
/// the soak samples only at the same spread; sampling a restarted node before the balancer
/// gave it back its share counted a leader's tasks as growth, or hid them.
async fn spread(
    client: &Http,
    addrs: &[String],
    groups: usize,
    want: Option<&[i64]>,
) -> Result<Vec<i64>, SoakError> {
    let until = Instant::now() + SPREAD_TIMEOUT;
    loop {
        let mut leads = Vec::with_capacity(addrs.len());
        for a in addrs {
            leads.push(scrape(client, a).await?.leads);
        }
        let done = match want {
            Some(w) => leads == w,
            None => even(&leads, groups),
        };
        if done {
            return Ok(leads);
        }
        if Instant::now() >= until {
            let wanted = match want {
                Some(w) => format!("{w:?}, as at the baseline"),
                None => format!("an even spread of {groups} groups"),
            };
            return Err(failed(format!(
                "leadership did not settle within {SPREAD_TIMEOUT:?}: nodes lead {leads:?} \
                 groups, not {wanted}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn process_cycles(
    rec: &mut Recorder,
    spec: &ProcessSpec,
    cycles: u32,
    settle: Duration,
) -> Result<(), SoakError> {
    let binary = match &spec.binary {
        Some(b) => b.clone(),
        None => {
            std::env::current_exe().map_err(|e| failed(format!("cannot find this binary: {e}")))?
        }
    };
    let dir = spec.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("raftnode-soak-{}", std::process::id()))
    });
    let ports: Vec<(u16, u16)> = (0..spec.nodes)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_, SoakError>>()?;
    let grpc_ports: Vec<u16> = ports.iter().map(|(g, _)| *g).collect();
    let peers = ServeArgs::peers_of(&grpc_ports);
    let mut procs = Vec::new();
    for (i, (grpc, http_port)) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let node_dir = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&node_dir).map_err(|source| SoakError::Write {
            path: node_dir.clone(),
            source,
        })?;
        let serve = ServeArgs {
            id,
            grpc_port: *grpc,
            http_port: *http_port,
            data_dir: node_dir.join("data"),
            peers: peers.clone(),
            groups: spec.groups.clone(),
            extra: Vec::new(),
        };
        let args = serve.to_args();
        let mut p = Proc {
            id,
            http: serve.http_addr(),
            args,
            dir: node_dir,
            binary: binary.clone(),
            child: None,
        };
        p.start()?;
        procs.push(p);
    }
    // The children this soak starts serve plain HTTP.
    let client = Http::new(&Credentials::default())?;
    for p in &procs {
        ready(&client, p, &spec.groups).await?;
    }
    let victim = procs.len() - 1;
    let addrs: Vec<String> = procs.iter().map(|p| p.http.clone()).collect();
    let mut baselines = Vec::new();
    let mut baseline_spread: Option<Vec<i64>> = None;
    for c in 0..=cycles {
        // Cycle 0 is warm-up: its restart settles what a first restart creates once.
        let sig = match spec.signal {
            StopSignal::Term => libc::SIGTERM,
            StopSignal::Kill => libc::SIGKILL,
            StopSignal::Both if c % 2 == 0 => libc::SIGTERM,
            StopSignal::Both => libc::SIGKILL,
        };
        let p = &mut procs[victim];
        p.signal(sig);
        let status = p.wait_exit(Duration::from_secs(30)).await?;
        if sig == libc::SIGTERM && !status.success() {
            return Err(failed(format!(
                "node {} exited with {status} after SIGTERM",
                p.id
            )));
        }
        p.start()?;
        ready(&client, &procs[victim], &spec.groups).await?;
        for p in &procs {
            ready(&client, p, &spec.groups).await?;
        }
        let now = spread(
            &client,
            &addrs,
            spec.groups.len(),
            baseline_spread.as_deref(),
        )
        .await?;
        baseline_spread.get_or_insert(now);
        if c == 0 {
            sample_all(rec, &client, &addrs, 0, &mut baselines, settle).await?;
            continue;
        }
        sample_all(rec, &client, &addrs, c, &mut baselines, settle).await?;
        let name = if sig == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGKILL"
        };
        rec.tick(format!("{name} restart {c} of node {}", procs[victim].id));
    }
    Ok(())
}
