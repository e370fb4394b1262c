//! The code's structure, checked: `crate::` imports between the files of `src/`, `services/`
//! and `gateway/` form no cycle, `services/` never imports the gateway, the SQL layer never
//! names the node, and no source file grows past the size where it usually does two jobs
//! (unless it says why at its top). A parent module and its children (`super::`) count as one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines above which a file must say at its top why it is one job.
const MAX_LINES: usize = 700;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::a::b` for a file (`src/lib.rs` is `crate`; `services/x/mod.rs` is `crate::services::x`).
fn module_path(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts[0] == "src" {
        parts.remove(0);
    }
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    std::iter::once("crate".to_string()).chain(parts).collect::<Vec<_>>().join("::")
}

/// Strips `//` comments so that doc links do not count as imports.
fn code_of(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every `crate::x::y` path in `code`, including the items of `crate::x::{y, z}` groups.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(found) = code[at..].find("crate::") {
        let start = at + found;
        let mut end = start + "crate::".len();
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':') {
            end += 1;
        }
        let path = code[start..end].trim_end_matches(':').to_string();
        if code[end..].starts_with('{') && code[start..end].ends_with("::") {
            let close = code[end..].find('}').map(|c| end + c).unwrap_or(end);
            for item in code[end + 1..close].split(',') {
                let item = item.trim().split("::").next().unwrap_or_default().split(" as ").next().unwrap_or_default();
                if !item.is_empty() && item != "self" {
                    paths.push(format!("{path}::{}", item.trim()));
                }
            }
        }
        paths.push(path);
        at = end;
    }
    paths
}

struct Graph {
    files: Vec<(PathBuf, String, String)>,
    edges: BTreeMap<usize, BTreeSet<usize>>,
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    for dir in ["src", "services", "gateway"] {
        rust_files(&root.join(dir), &mut paths);
    }
    paths.sort();
    let files: Vec<(PathBuf, String, String)> = paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let module = module_path(root, &path);
            (path, module, text)
        })
        .collect();
    let by_module: BTreeMap<&str, usize> = files.iter().enumerate().map(|(i, (_, m, _))| (m.as_str(), i)).collect();
    let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (from, (_, _, text)) in files.iter().enumerate() {
        for path in crate_paths(&code_of(text)) {
            let parts: Vec<&str> = path.split("::").collect();
            let target = (2..=parts.len()).rev().find_map(|k| by_module.get(parts[..k].join("::").as_str()).copied());
            if let Some(to) = target.filter(|to| *to != from) {
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    Graph { files, edges }
}

#[test]
fn crate_imports_form_no_cycle() {
    let graph = graph();
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(node: usize, graph: &Graph, state: &mut Vec<u8>, path: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[node] = 1;
        path.push(node);
        for &next in graph.edges.get(&node).into_iter().flatten() {
            if state[next] == 1 {
                let start = path.iter().position(|n| *n == next).unwrap();
                return Some(path[start..].to_vec());
            }
            if state[next] == 0
                && let Some(cycle) = visit(next, graph, state, path)
            {
                return Some(cycle);
            }
        }
        path.pop();
        state[node] = 2;
        None
    }
    let mut state = vec![0u8; graph.files.len()];
    assert!(graph.edges.values().map(BTreeSet::len).sum::<usize>() > 100, "the parser found the imports");
    for node in 0..graph.files.len() {
        if state[node] == 0
            && let Some(cycle) = visit(node, &graph, &mut state, &mut Vec::new())
        {
            let names: Vec<String> = cycle.iter().map(|i| graph.files[*i].1.clone()).collect();
            panic!("import cycle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn services_do_not_import_the_gateway_and_sql_does_not_name_the_node() {
    for (path, module, text) in graph().files {
        let code = code_of(&text);
        if module.starts_with("crate::services") {
            assert!(!code.contains("crate::gateway"), "{} imports the gateway", path.display());
            assert!(!code.contains("crate::server"), "{} imports the server assembly", path.display());
        }
        if module.starts_with("crate::services::sql") {
            assert!(!code.contains("node::"), "{} names the node", path.display());
        }
    }
}

#[test]
fn no_file_is_two_jobs() {
    for (path, _, text) in graph().files {
        let lines = text.lines().count();
        let says_why = text.lines().take(15).any(|line| line.contains("one job") || line.contains("long because"));
        assert!(lines <= MAX_LINES || says_why, "{} has {lines} lines: split it by job", path.display());
    }
}
