//! The crate's structure holds: no two source files depend on each other, directly or through
//! others. The graph is built from the code itself: every `use` declaration, and every path that
//! names a module of the crate (`crate::a::b`, `super::x`, or a child module of the file), with
//! test modules left out. A module's `mod.rs` may declare and re-export its children; a child
//! that then imports its parent's items closes a cycle, and is reported with the names it takes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every library source file, by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(src).unwrap();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || rel == Path::new("main.rs") {
                continue;
            }
            let mut module: Module = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|l| l == "mod" || l == "lib") {
                module.pop();
            }
            out.insert(module, path);
        }
    }
    out
}

/// The file's code without comments and without `#[cfg(test)]` modules.
fn code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim();
        if t == "#[cfg(test)]" {
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
            if next.starts_with("mod ") && next.ends_with('{') {
                // Skip to the brace that closes the test module.
                let mut depth = 0i32;
                i += 1;
                while i < lines.len() {
                    depth += lines[i].matches('{').count() as i32;
                    depth -= lines[i].matches('}').count() as i32;
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                continue;
            }
        }
        if !t.starts_with("//") {
            out.push_str(lines[i]);
            out.push('\n');
        }
        i += 1;
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into whole paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    // `a as b` keeps `a`: mark the alias before white space goes.
    let tree: String = tree
        .replace(" as ", "@")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    fn go(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = tree[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            let mut prefix = prefix.to_vec();
            prefix.extend(head);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&prefix, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            go(&prefix, &inner[start..], out);
        } else if !tree.is_empty() {
            let mut path = prefix.to_vec();
            let tree = tree.split('@').next().unwrap_or(tree);
            path.extend(tree.split("::").filter(|s| !s.is_empty()).map(String::from));
            out.push(path);
        }
    }
    let mut out = Vec::new();
    go(&[], &tree, &mut out);
    out
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Paths written inline that start with `start` (`crate::`, `super::`, a child module).
fn inline_paths(code: &str, start: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(start) {
        let at = from + at;
        from = at + start.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| ident_char(c) || c == ':') {
            continue;
        }
        let rest: String = code[at..]
            .chars()
            .take_while(|c| ident_char(*c) || *c == ':')
            .collect();
        out.push(
            rest.split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        );
    }
    out
}

/// The file a path names, from the module it is written in: its longest prefix that is a file.
fn resolve(
    here: &Module,
    path: &[String],
    children: &BTreeSet<String>,
    files: &BTreeMap<Module, PathBuf>,
) -> Option<Module> {
    let first = path.first()?;
    let mut abs: Module = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => here[..here.len().saturating_sub(1)].to_vec(),
        c if children.contains(c) => {
            let mut m = here.clone();
            m.push(c.to_string());
            m.extend(path[1..].iter().cloned());
            return longest(&m, files);
        }
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().is_some_and(|s| s == "super") {
        abs.pop();
        rest = &rest[1..];
    }
    abs.extend(rest.iter().cloned());
    longest(&abs, files)
}

fn longest(path: &Module, files: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| files.contains_key(m))
}

#[test]
fn no_source_file_depends_on_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    assert!(files.len() > 30, "found {} files", files.len());
    // file -> (file it imports -> the paths that tie them)
    let mut edges: BTreeMap<Module, BTreeMap<Module, BTreeSet<String>>> = BTreeMap::new();
    for (here, path) in &files {
        let code = code(&fs::read_to_string(path).unwrap());
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub ").unwrap_or(l);
                let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
                l.strip_prefix("mod ")?.strip_suffix(';').map(String::from)
            })
            .collect();
        let mut paths = Vec::new();
        for stmt in code.split(';') {
            let s = stmt.trim();
            if let Some(at) = s.find("use ") {
                let head = &s[..at];
                let is_use = head.trim().is_empty()
                    || head.trim().ends_with("pub")
                    || head.trim().ends_with(')')
                    || head.trim().ends_with('}')
                    || head.trim().ends_with(']');
                if is_use {
                    paths.extend(expand(&s[at + 4..]));
                }
            }
        }
        paths.extend(inline_paths(&code, "crate::"));
        paths.extend(inline_paths(&code, "super::"));
        for child in &children {
            paths.extend(inline_paths(&code, &format!("{child}::")));
        }
        for p in paths {
            if let Some(target) = resolve(here, &p, &children, &files) {
                if &target != here {
                    edges
                        .entry(here.clone())
                        .or_default()
                        .entry(target)
                        .or_default()
                        .insert(p.join("::"));
                }
            }
        }
    }
    // Tarjan's strongly connected components.
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeMap<Module, BTreeSet<String>>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        next: usize,
        cycles: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State<'_>, v: &Module) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let targets: Vec<Module> = s
            .edges
            .get(v)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        for w in targets {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                scc.push(w);
                if done {
                    break;
                }
            }
            if scc.len() > 1 {
                s.cycles.push(scc);
            }
        }
    }
    let mut state = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        cycles: Vec::new(),
    };
    for m in files.keys() {
        if !state.index.contains_key(m) {
            visit(&mut state, m);
        }
    }
    let name = |m: &Module| {
        if m.is_empty() {
            "lib.rs".to_string()
        } else {
            files[m].strip_prefix(&src).unwrap().display().to_string()
        }
    };
    let mut report = String::new();
    for scc in &state.cycles {
        report.push_str("cycle:\n");
        let members: BTreeSet<&Module> = scc.iter().collect();
        for from in scc {
            for (to, why) in edges.get(from).into_iter().flatten() {
                if members.contains(to) {
                    let why: Vec<&String> = why.iter().take(4).collect();
                    report.push_str(&format!("  {} -> {}: {why:?}\n", name(from), name(to)));
                }
            }
        }
    }
    let edge_count: usize = edges.values().map(BTreeMap::len).sum();
    println!("{} files, {edge_count} file-to-file imports", files.len());
    assert!(state.cycles.is_empty(), "import cycles:\n{report}");
    assert!(edge_count > 60, "the graph looks empty: {edge_count} edges");
}
