//! Backends listed in a file that other tooling writes (consul-template, a
//! deploy script): YAML or JSON, `backends: [...]` or a bare list, each
//! entry shaped like a backend of the config file.

use std::path::Path;

use serde::Deserialize;

use crate::config::BackendConfig;
use veer_data_plane::pool::BackendSpec;

#[derive(Deserialize)]
#[serde(untagged)]
enum Listing {
    List(Vec<BackendConfig>),
    Document { backends: Vec<BackendConfig> },
}

/// The backends `path` lists, every entry checked; the first problem found
/// (with its entry) otherwise. Entries are `IP:PORT`: a file is written by
/// tooling that knows the addresses.
pub fn read(path: &Path) -> Result<Vec<BackendSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`read`] on text.
pub fn parse(text: &str) -> Result<Vec<BackendSpec>, String> {
    let listing: Listing = serde_norway::from_str(text)
        .map_err(|e| format!("{e} (expected `backends: [{{name, address, ...}}]` or a list of such entries)"))?;
    let entries = match listing {
        Listing::List(entries) | Listing::Document { backends: entries } => entries,
    };
    let mut specs: Vec<BackendSpec> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("backends[{i}] ({})", entry.name);
        let address = entry.address.parse().map_err(|_| format!("{at}: address {:?} is not IP:PORT", entry.address))?;
        if specs.iter().any(|spec| spec.name == entry.name) {
            return Err(format!("{at}: the name is listed twice"));
        }
        let spec = BackendSpec {
            name: entry.name,
            address,
            weight: entry.weight,
            protocol: entry.protocol,
            max_concurrent: entry.max_concurrent,
            labels: entry.labels,
        };
        if let Some((field, problem)) = spec.problems().into_iter().next() {
            return Err(format!("{at}.{field}: {problem}"));
        }
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn yaml_json_and_bare_lists_are_read_and_bad_entries_named() {
        let yaml = parse("backends:\n  - {name: a, address: 127.0.0.1:1, weight: 3}\n").unwrap();
        assert_eq!((yaml[0].name.as_str(), yaml[0].weight), ("a", 3));
        let json = parse(r#"[{"name": "a", "address": "127.0.0.1:1"}, {"name": "b", "address": "[::1]:2"}]"#).unwrap();
        assert_eq!(json.len(), 2);
        assert!(parse("backends: []").unwrap().is_empty());
        let error = parse("- {name: a, address: api.internal:80}").unwrap_err();
        assert!(error.contains("backends[0] (a): address \"api.internal:80\" is not IP:PORT"), "{error}");
        let error = parse("- {name: a, address: 127.0.0.1:1}\n- {name: a, address: 127.0.0.1:2}").unwrap_err();
        assert!(error.contains("listed twice"), "{error}");
        let error = parse("- {name: a, address: 127.0.0.1:1, weight: 0}").unwrap_err();
        assert!(error.contains("weight"), "{error}");
        assert!(parse("backends: {name: a}").is_err());
        assert!(parse("- {name: a, address: 127.0.0.1:1, colour: red}").is_err(), "unknown keys are refused");
    }
}
