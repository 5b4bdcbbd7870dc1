//! External tensor data (`location`/`offset`/`length` entries pointing into side files).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::proto::{tensor_proto, ModelProto, TensorProto};
use crate::error::{Error, Result};

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(tensor_proto::DATA_LOCATION_EXTERNAL)
}

/// Files an external-data model depends on (for depfiles), relative to the model's folder.
pub fn locations(model: &ModelProto) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(g) = &model.graph {
        for t in &g.initializer {
            if is_external(t) {
                if let Some(loc) = entry(t, "location") {
                    if !out.iter().any(|l| l == loc) {
                        out.push(loc.to_string());
                    }
                }
            }
        }
    }
    out
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key.as_deref() == Some(key))
        .and_then(|e| e.value.as_deref())
}

/// A location is a relative path that stays inside the model's folder: no absolute paths, no
/// `..`, so a model file cannot make detrc read arbitrary files.
pub fn check_location(tensor: &str, loc: &str) -> Result<PathBuf> {
    let bad = |reason: &str| Error::ExternalData {
        tensor: tensor.to_string(),
        reason: format!("location '{loc}' {reason}"),
    };
    if loc.is_empty() {
        return Err(bad("is empty"));
    }
    let p = Path::new(loc);
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(bad("escapes the model's folder ('..')")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(
                    "is absolute; only paths relative to the model are allowed",
                ))
            }
        }
    }
    Ok(p.to_path_buf())
}

/// Replaces every external reference in the main graph by `raw_data` slices of the mapped side
/// files. Returns whether any tensor was external.
pub fn resolve(model: &mut ModelProto, dir: &Path) -> Result<bool> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(false);
    };
    let mut maps: HashMap<PathBuf, Bytes> = HashMap::new();
    let mut any = false;
    for t in graph.initializer.iter_mut() {
        if !is_external(t) {
            continue;
        }
        any = true;
        let name = t.name.clone().unwrap_or_default();
        let err = |reason: String| Error::ExternalData {
            tensor: name.clone(),
            reason,
        };
        let loc = entry(t, "location").ok_or_else(|| err("no 'location' entry".into()))?;
        let rel = check_location(&name, loc)?;
        let parse = |key: &str| -> Result<Option<u64>> {
            match entry(t, key) {
                None => Ok(None),
                Some(v) => v
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| err(format!("'{key}' is not a number: '{v}'"))),
            }
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?;
        let full = dir.join(&rel);
        let data = match maps.get(&full) {
            Some(b) => b.clone(),
            None => {
                let b = super::map_file(&full).map_err(|e| err(e.to_string()))?;
                maps.insert(full.clone(), b.clone());
                b
            }
        };
        let start = offset as usize;
        let end = match length {
            Some(l) => start.checked_add(l as usize),
            None => Some(data.len()),
        };
        let end = end
            .filter(|&e| e <= data.len() && start <= e)
            .ok_or_else(|| {
                let span = match length {
                    Some(l) => format!("offset {offset} + length {l}"),
                    None => format!("offset {offset}"),
                };
                err(format!(
                    "{span} is past the end of '{}' ({} bytes)",
                    rel.display(),
                    data.len()
                ))
            })?;
        t.raw_data = Some(data.slice(start..end));
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(any)
}
