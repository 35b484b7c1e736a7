//! The bundled Grafana dashboards: each has the `datasource`, `job`, `instance` and `group`
//! variables and a pinned schemaVersion, every PromQL expression in it parses, and every metric
//! it names exists in a live scrape of a 3-node cluster.

mod common;
use common::*;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::Value;
use std::collections::BTreeSet;

struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = ();
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
        let name = match e {
            Expr::VectorSelector(vs) => vs.name.clone(),
            Expr::MatrixSelector(ms) => ms.vs.name.clone(),
            _ => None,
        };
        self.0.extend(name);
        Ok(true)
    }
}

/// Grafana's variables are not PromQL; give them values a query could take.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$group", ".*")
}

/// Every PromQL expression in a dashboard: panel targets, annotation queries, and the selector
/// inside each `label_values(...)` variable query.
fn expressions(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(String::from));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        out.extend(a["expr"].as_str().map(String::from));
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_string());
            out.extend(inner);
        }
    }
    out
}

#[test]
fn dashboards_parse_and_name_only_live_metrics() {
    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir("dashboards").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            dashboards.push((path, d));
        }
    }
    assert!(
        dashboards.len() >= 3,
        "expected the three bundled dashboards"
    );

    let mut used = BTreeSet::new();
    for (path, d) in &dashboards {
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{} has no pinned schemaVersion",
            path.display()
        );
        let vars: BTreeSet<&str> = d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for v in ["datasource", "job", "instance", "group"] {
            assert!(
                vars.contains(v),
                "{} lacks the {v} variable",
                path.display()
            );
        }
        let exprs = expressions(d);
        assert!(!exprs.is_empty(), "{} has no queries", path.display());
        for e in exprs {
            let parsed = parser::parse(&substitute(&e))
                .unwrap_or_else(|err| panic!("{}: {e:?} does not parse: {err}", path.display()));
            let mut names = Names(BTreeSet::new());
            let _ = walk_expr(&mut names, &parsed);
            assert!(
                !names.0.is_empty(),
                "{}: {e:?} names no metric",
                path.display()
            );
            used.extend(names.0);
        }
    }

    // Per-group series and node-wide aggregates (what thousands of groups export): every
    // metric charted is there in both.
    for aggregate in [false, true] {
        assert_live(&used, aggregate);
    }
    println!(
        "dashboards: {} metric names, all present in a live scrape in both metric modes",
        used.len()
    );
}

/// A live cluster with traffic through a follower, so that every family the dashboards chart
/// has samples; `aggregate` turns per-group labels off.
fn assert_live(used: &BTreeSet<String>, aggregate: bool) {
    let mut cluster = Cluster::new(3, &[1], Tuning::default());
    if aggregate {
        for node in &mut cluster.nodes {
            node.envs
                .push(("RAFTNODE_METRICS_GROUP_LABELS".into(), "false".into()));
        }
    }
    for node in &cluster.nodes {
        node.start();
    }
    for node in &cluster.nodes {
        node.wait_ready(READY_TIMEOUT);
    }
    let leader = cluster.leader_of(1);
    let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
    for i in 0..5 {
        cluster.node(follower).put_ok(1, &format!("d{i}"), "v");
    }
    let node = cluster.node(leader);
    let mut scraped = Scrape::default();
    let all_present = wait_until(std::time::Duration::from_secs(20), || {
        scraped = node.scrape();
        used.iter().all(|m| scraped.has(m, &[]))
    });
    let missing: Vec<&String> = used.iter().filter(|m| !scraped.has(m, &[])).collect();
    assert!(
        all_present,
        "metrics used by dashboards but absent from a live scrape (aggregate: {aggregate}): \
         {missing:?}"
    );
    if aggregate {
        assert!(
            !scraped.has("raftnode_raft_has_leader", &[("group", "1")]),
            "aggregate mode still exports per-group series"
        );
    }
}
