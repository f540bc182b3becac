//! A check that `moat`'s library keeps its layers: no module of `filter-user/src` reaches, through
//! the `crate::` paths it uses, a module that reaches it back. Run as a unit test of xtask
//! (`cargo xtask test` runs those), it names the modules of any cycle.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The modules each module of `dir` names through `crate::` (outside its tests).
    fn module_graph(dir: &std::path::Path) -> BTreeMap<String, BTreeSet<String>> {
        let mut sources = BTreeMap::new();
        for entry in std::fs::read_dir(dir).expect("reading filter-user/src") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|ext| ext == "rs") {
                let name = path
                    .file_stem()
                    .and_then(|stem| stem.to_str())
                    .expect("a UTF-8 file name")
                    .to_string();
                let text = std::fs::read_to_string(&path).expect("reading a module");
                let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
                sources.insert(name, code);
            }
        }
        let modules: BTreeSet<String> = sources.keys().cloned().collect();
        sources
            .iter()
            .map(|(name, code)| {
                let mut used = BTreeSet::new();
                for (at, _) in code.match_indices("crate::") {
                    let rest = &code[at + "crate::".len()..];
                    if let Some(group) = rest.strip_prefix('{') {
                        // `use crate::{a::X, b, c::{..}}`: the first segment of each top item.
                        let mut depth = 0;
                        let mut item = String::new();
                        for ch in group.chars() {
                            match ch {
                                '{' => depth += 1,
                                '}' if depth == 0 => break,
                                '}' => depth -= 1,
                                ',' if depth == 0 => {
                                    used.insert(first_segment(&item));
                                    item.clear();
                                    continue;
                                }
                                _ => {}
                            }
                            item.push(ch);
                        }
                        used.insert(first_segment(&item));
                    } else {
                        used.insert(first_segment(rest));
                    }
                }
                used.retain(|used| modules.contains(used) && used != name);
                (name.clone(), used)
            })
            .collect()
    }

    fn first_segment(path: &str) -> String {
        path.trim()
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// Whether `to` is reachable from `from`.
    fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(module) = stack.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    }

    #[test]
    fn moat_library_modules_form_no_cycle() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter-user/src");
        let graph = module_graph(&src);
        assert!(graph.len() > 20, "read the modules of {}", src.display());
        let cycles: Vec<String> = graph
            .iter()
            .flat_map(|(module, used)| {
                used.iter()
                    .filter(|other| reaches(&graph, other, module))
                    .map(move |other| format!("{module} -> {other} -> ... -> {module}"))
            })
            .collect();
        assert!(cycles.is_empty(), "module cycles: {cycles:#?}");
    }

    #[test]
    fn the_check_sees_a_cycle() {
        let dir = std::env::temp_dir().join(format!("moat-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, text) in [
            ("a", "use crate::{b::X, c};"),
            ("b", "fn f() { crate::a::g() }"),
            ("c", ""),
        ] {
            std::fs::write(dir.join(format!("{name}.rs")), text).expect("write");
        }
        let graph = module_graph(&dir);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(reaches(&graph, "a", "a"), "{graph:?}");
        assert!(!reaches(&graph, "c", "a"), "{graph:?}");
    }
}
