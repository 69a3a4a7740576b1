//! The README and `docs/` stand on their own: every relative link resolves to a file inside
//! the repository, and no text points at files a reader of the repository does not have.

use std::path::{Component, Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read docs") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// The targets of `[text](target)` links on one line.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let end = tail.find(')').unwrap_or(tail.len());
        out.push(&tail[..end]);
        rest = &tail[end..];
    }
    out
}

/// `path` with `.` and `..` taken out, without touching the file system.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn readme_and_docs_link_only_inside_the_repository() {
    let root = repository();
    let mut files = vec![root.join("README.md")];
    markdown_files(&root.join("docs"), &mut files);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let shown = file.strip_prefix(&root).expect("inside").display().to_string();
        for (n, line) in text.lines().enumerate() {
            for needle in ["../shared", "/work/"] {
                if line.contains(needle) {
                    found.push(format!("{shown}:{}: names {needle:?}, which the repository does not hold", n + 1));
                }
            }
            for target in link_targets(line) {
                let path = target.split('#').next().unwrap_or("");
                if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                    continue;
                }
                let resolved = normal(&file.parent().expect("a folder").join(path));
                if !resolved.starts_with(&root) || !resolved.exists() {
                    found.push(format!(
                        "{shown}:{}: the link {target:?} leads outside the repository or nowhere",
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(files.len() > 5, "found the docs ({} files)", files.len());
    assert!(found.is_empty(), "{}", found.join("\n"));
}
