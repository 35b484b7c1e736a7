//! The bundled alert rules and routing, checked with Prometheus's and Alertmanager's own tools:
//! rules parse and lint, every alert's promtool unit tests pass, every alert has a severity,
//! the three annotations and a runbook section, and each severity routes to its receiver.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} not found ({e}): install Debian's prometheus and prometheus-alertmanager (scripts/test-all does)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

fn alerts() -> Vec<String> {
    std::fs::read_to_string("alerts/raftnode.yaml")
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    run("promtool", &["check", "rules", "alerts/raftnode.yaml"]);
    let out = run(
        "promtool",
        &["test", "rules", "alerts/tests/raftnode_test.yaml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_labels_annotations_a_runbook_and_a_firing_test() {
    let rules = std::fs::read_to_string("alerts/raftnode.yaml").unwrap();
    let runbook = std::fs::read_to_string("alerts/RUNBOOK.md").unwrap();
    let tests = std::fs::read_to_string("alerts/tests/raftnode_test.yaml").unwrap();
    let names = alerts();
    assert!(names.len() >= 15, "only {} alerts", names.len());
    for (i, name) in names.iter().enumerate() {
        assert!(
            name.starts_with("RaftNode"),
            "{name} lacks the RaftNode prefix"
        );
        let start = rules.find(&format!("- alert: {name}\n")).unwrap();
        let end = names
            .get(i + 1)
            .and_then(|n| rules.find(&format!("- alert: {n}\n")))
            .unwrap_or(rules.len());
        let body = &rules[start..end];
        assert!(
            body.contains("severity: warning") || body.contains("severity: critical"),
            "{name} has no severity"
        );
        for a in ["summary:", "description:", "runbook_url:"] {
            assert!(body.contains(a), "{name} lacks {a}");
        }
        let anchor = format!("RUNBOOK.md#{}", name.to_lowercase());
        assert!(
            body.contains(&anchor),
            "{name}'s runbook_url does not point at {anchor}"
        );
        assert!(
            runbook.contains(&format!("\n## {name}\n")),
            "RUNBOOK.md has no section for {name}"
        );
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "no promtool test for {name}"
        );
    }
}

#[test]
fn alertmanager_routes_each_severity_to_its_receiver() {
    let cfg = "--config.file=deploy/alertmanager/alertmanager.yml";
    run(
        "amtool",
        &["check-config", "deploy/alertmanager/alertmanager.yml"],
    );
    for (severity, receiver) in [("critical", "pager"), ("warning", "ticket")] {
        run(
            "amtool",
            &[
                "config",
                "routes",
                "test",
                cfg,
                &format!("--verify.receivers={receiver}"),
                &format!("severity={severity}"),
                "instance=node1:8080",
            ],
        );
    }
    run(
        "promtool",
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
}
