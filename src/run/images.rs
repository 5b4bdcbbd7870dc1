//! Input images: expanding folders, checking them up front, decoding.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::error::{Result, RunError};

/// Extensions picked up from folders (case-insensitive). Files named explicitly are decoded
/// whatever their name, by content.
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Expands every folder into its JPEG/PNG files (not recursive), sorted by file name so runs
/// are deterministic; files are kept in the order given.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(RunError::NoInputs);
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| RunError::Read {
            path: p.clone(),
            source,
        })?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let rd = std::fs::read_dir(p).map_err(|source| RunError::Read {
            path: p.clone(),
            source,
        })?;
        let mut found = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| RunError::Read {
                path: p.clone(),
                source,
            })?;
            let path = entry.path();
            if has_image_extension(&path) && path.is_file() {
                found.push(path);
            }
        }
        if found.is_empty() {
            return Err(RunError::NoImages { path: p.clone() });
        }
        found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        out.extend(found);
    }
    Ok(out)
}

fn image_error(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Opens an image and guesses its format from the content, not the file name.
fn open(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let read_error = |source| RunError::Read {
        path: path.to_path_buf(),
        source,
    };
    image::ImageReader::open(path)
        .map_err(read_error)?
        .with_guessed_format()
        .map_err(read_error)
}

/// Reads only the header: catches missing, unreadable and non-image files before any output is
/// written. Returns (width, height).
pub fn probe(path: &Path) -> Result<(u32, u32)> {
    let reader = open(path)?;
    if reader.format().is_none() {
        return Err(image_error(path, "not a JPEG or PNG file"));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| image_error(path, e))?;
    if w == 0 || h == 0 {
        return Err(image_error(path, format!("empty image ({w}x{h})")));
    }
    Ok((w, h))
}

/// Decodes to 8-bit RGB (grey is expanded, alpha dropped, 16-bit scaled down).
pub fn load(path: &Path) -> Result<RgbImage> {
    let reader = open(path)?;
    let img = reader.decode().map_err(|e| image_error(path, e))?;
    let rgb = img.into_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(image_error(path, "empty image"));
    }
    Ok(rgb)
}

/// The file name reported in `detections.json`.
pub fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// `OUTDIR/<stem>.png` for every input; refuses two inputs with the same stem (one would
/// silently replace the other) and outputs that would replace an input.
pub fn annotated_paths(inputs: &[PathBuf], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut seen: std::collections::HashMap<PathBuf, &PathBuf> = Default::default();
    let canon_inputs: Vec<Option<PathBuf>> = inputs
        .iter()
        .map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let stem = input
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_else(|| "image".into());
        let mut name = stem;
        name.push(".png");
        let target = out_dir.join(name);
        if let Some(first) = seen.insert(target.clone(), input) {
            return Err(RunError::DuplicateOutput {
                first: first.clone(),
                second: input.clone(),
                output: target,
            });
        }
        if let Ok(canon) = std::fs::canonicalize(&target) {
            if let Some(i) = canon_inputs
                .iter()
                .position(|c| c.as_deref() == Some(canon.as_path()))
            {
                return Err(RunError::OverwritesInput {
                    input: inputs[i].clone(),
                    output: target,
                });
            }
        }
        out.push(target);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_expand_sorted_and_filtered() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b.PNG", "a.jpg", "c.jpeg", "notes.txt", "z.gif"] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        std::fs::create_dir(d.path().join("sub.png")).unwrap();
        let got = collect(&[d.path().to_path_buf()]).unwrap();
        let names: Vec<String> = got.iter().map(|p| display_name(p)).collect();
        assert_eq!(names, ["a.jpg", "b.PNG", "c.jpeg"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            collect(&[empty.path().to_path_buf()]),
            Err(RunError::NoImages { .. })
        ));
        assert!(matches!(collect(&[]), Err(RunError::NoInputs)));
    }

    #[test]
    fn same_stem_twice_is_refused() {
        let out = Path::new("/tmp/out");
        let ok = annotated_paths(&["x/a.jpg".into(), "x/b.png".into()], out).unwrap();
        assert_eq!(ok, [out.join("a.png"), out.join("b.png")]);
        let e = annotated_paths(&["x/a.jpg".into(), "y/a.png".into()], out).unwrap_err();
        assert!(matches!(e, RunError::DuplicateOutput { .. }), "{e}");
    }
}
