//! The crate's layers point down only: wire → core → backend and memory → transport →
//! serve. This reads every source file's `crate::` and `super::` paths and fails on an
//! import that points up, and on any cycle between the files of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the ones it may use.
const MAY_USE: &[(&str, &[&str])] = &[
    ("wire", &[]),
    ("core", &["wire"]),
    ("backend", &["core", "wire"]),
    ("memory", &["core", "wire"]),
    ("transport", &["backend", "memory", "core", "wire"]),
    ("error", &["backend", "memory", "core", "wire"]),
    ("config", &["error", "core", "wire"]),
    ("control", &["config", "error", "backend", "memory", "core", "wire"]),
    ("serve", &["control", "config", "error", "transport", "backend", "memory", "core", "wire"]),
    ("lib", &["serve", "control", "config", "error", "transport", "backend", "memory", "core", "wire"]),
];

/// A module's path from the crate root, e.g. ["core", "queue"], for a file under src/.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, so prose naming a module is no import.
fn code(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The modules a file names through `crate::a::b` or `super::a` paths (and `use
/// super::{a, b}` groups), resolved to paths from the crate root; only the part that
/// names a module known in `modules` is kept.
fn imports(module: &[String], text: &str, modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let text = code(text);
    let mut found = BTreeSet::new();
    let tokens: Vec<&str> = text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{' || c == ',')).filter(|t| !t.is_empty()).collect();
    // A `super::` path is relative to the file's parent module (for a mod.rs, itself
    // plays that part for its children, so use the module's own parent likewise).
    let parent: Vec<String> = module.iter().take(module.len().saturating_sub(1)).cloned().collect();
    for token in tokens {
        let (base, rest) = if let Some(rest) = token.strip_prefix("crate::") {
            (Vec::new(), rest)
        } else if let Some(rest) = token.strip_prefix("super::") {
            (parent.clone(), rest)
        } else {
            continue;
        };
        let rest = rest.trim_end_matches([',', '{']);
        for path in expand(rest) {
            let mut full = base.clone();
            let mut longest = None;
            for part in path.split("::").filter(|p| !p.is_empty()) {
                full.push(part.to_string());
                if modules.contains(&full) {
                    longest = Some(full.clone());
                }
            }
            if let Some(target) = longest.filter(|t| t != module) {
                found.insert(target);
            }
        }
    }
    found
}

/// `a::{b, c}` as `a::b` and `a::c` (one level of braces is all the crate uses).
fn expand(path: &str) -> Vec<String> {
    match path.split_once("::{") {
        Some((head, group)) => group.split(',').map(|item| format!("{head}::{}", item.trim_matches(['{', '}', ' ']))).collect(),
        None if path.starts_with('{') => path.trim_matches(['{', '}']).split(',').map(str::to_owned).collect(),
        None => vec![path.to_owned()],
    }
}

#[test]
fn layers_point_down_and_no_files_import_each_other_in_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let modules: BTreeSet<Vec<String>> = paths.iter().map(|p| module_of(&src, p)).collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for path in &paths {
        let module = module_of(&src, path);
        let text = std::fs::read_to_string(path).unwrap();
        // Tests inside a file may reach anywhere.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        graph.insert(module.clone(), imports(&module, text, &modules));
    }
    let layer = |module: &[String]| module.first().cloned().unwrap_or_else(|| "lib".into());
    let mut wrong = Vec::new();
    for (from, targets) in &graph {
        let allowed = MAY_USE.iter().find(|(name, _)| *name == layer(from)).map(|(_, may)| *may).unwrap_or_else(|| panic!("{from:?} is in no layer"));
        for to in targets {
            if layer(to) != layer(from) && !allowed.contains(&layer(to).as_str()) {
                wrong.push(format!("{} uses {}", from.join("::"), to.join("::")));
            }
        }
    }
    // Cycles between files, by depth-first search.
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![start.clone()];
        visit(start, &graph, &mut stack, &mut done, &mut cycles);
    }
    assert!(wrong.is_empty() && cycles.is_empty(), "imports that point up:\n{}\nfiles that import each other:\n{}", wrong.join("\n"), cycles.join("\n"));
}

fn visit(module: &Vec<String>, graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, stack: &mut Vec<Vec<String>>, done: &mut BTreeSet<Vec<String>>, cycles: &mut Vec<String>) {
    if done.contains(module) {
        return;
    }
    for next in graph.get(module).into_iter().flatten() {
        // A module may use its own children (`mod.rs` re-exports), not be used by them.
        if next.starts_with(module) && next.len() > module.len() {
            continue;
        }
        if let Some(position) = stack.iter().position(|m| m == next) {
            let cycle: Vec<String> = stack[position..].iter().chain([next]).map(|m| m.join("::")).collect();
            cycles.push(cycle.join(" → "));
            continue;
        }
        stack.push(next.clone());
        visit(next, graph, stack, done, cycles);
        stack.pop();
    }
    done.insert(module.clone());
}
