//! A reader of the Prometheus text format, for the tests, the benchmarks and the soak: one
//! parse of a scrape, then sums over a family with label filters.

use std::collections::BTreeMap;

/// One sample line: its family name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name (`raftnode_owner_tasks`, `process_threads`, `..._bucket`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// The samples, in the order of the text.
    pub samples: Vec<Sample>,
}

/// Parses `{a="x",b="y"}`, unescaping `\"`, `\\` and `\n` in values.
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(name.trim().to_string(), value);
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(out)
}

impl Scrape {
    /// Parses a scrape; comment lines and lines that do not parse are skipped.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (head, value) = match line.rfind('}') {
                    Some(close) => (&line[..=close], line[close + 1..].trim()),
                    None => line.split_once(' ')?,
                };
                // A timestamp may follow the value.
                let value: f64 = value.split_whitespace().next()?.parse().ok()?;
                let (name, labels) = match head.split_once('{') {
                    Some((n, l)) => (n, parse_labels(l.strip_suffix('}')?)?),
                    None => (head.trim(), BTreeMap::new()),
                };
                Some(Sample {
                    name: name.to_string(),
                    labels,
                    value,
                })
            })
            .collect();
        Scrape { samples }
    }

    /// The samples of family `name` whose labels include every `(label, value)` of `with`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// The sum of family `name`'s samples with the labels `with` (0 when none matches).
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.matching(name, with).map(|s| s.value).sum()
    }

    /// Whether family `name` has any sample with the labels `with`.
    pub fn has(&self, name: &str, with: &[(&str, &str)]) -> bool {
        self.matching(name, with).next().is_some()
    }

    /// Every family name with the sum of its samples.
    pub fn families(&self) -> BTreeMap<&str, f64> {
        let mut out = BTreeMap::new();
        for s in &self.samples {
            *out.entry(s.name.as_str()).or_insert(0.0) += s.value;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP raftnode_owner_tasks Live tokio tasks per owner.
# TYPE raftnode_owner_tasks gauge
raftnode_owner_tasks{owner_kind="group",owner="1"} 5
raftnode_owner_tasks{owner_kind="group",owner="2"} 7
raftnode_owner_tasks{owner_kind="node",owner="main"} 3
process_threads 9
odd{path="a \"quoted\" \\ value,x"} 1.5 1700000000000
"#;

    #[test]
    fn sums_filter_by_labels() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("raftnode_owner_tasks", &[]), 15.0);
        assert_eq!(
            s.sum("raftnode_owner_tasks", &[("owner_kind", "group")]),
            12.0
        );
        assert_eq!(
            s.sum(
                "raftnode_owner_tasks",
                &[("owner_kind", "group"), ("owner", "2")]
            ),
            7.0
        );
        assert_eq!(s.sum("process_threads", &[]), 9.0);
        assert_eq!(s.sum("absent", &[]), 0.0);
        assert!(!s.has("raftnode_owner_tasks", &[("owner", "9")]));
        let odd = s.matching("odd", &[]).next().unwrap();
        assert_eq!(odd.labels["path"], r#"a "quoted" \ value,x"#);
        assert_eq!(odd.value, 1.5);
        assert_eq!(s.families()["raftnode_owner_tasks"], 15.0);
    }
}
