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
            cause: source,
        })?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let rd = std::fs::read_dir(p).map_err(|source| RunError::Read {
            path: p.clone(),
            cause: source,
        })?;
        let mut found = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| RunError::Read {
                path: p.clone(),
                cause: source,
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
        cause: source,
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
    match reader.format() {
        None => return Err(image_error(path, "not a JPEG or PNG file")),
        Some(image::ImageFormat::Jpeg) => drop(read_whole_jpeg(path)?),
        Some(_) => {}
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
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        let data = read_whole_jpeg(path)?;
        if let Some(rgb) = decode_jpeg(&data) {
            return Ok(rgb);
        }
        // What libjpeg-turbo refuses (CMYK, say) goes to image's decoder, which either reads
        // it or says what is wrong.
    }
    let img = reader.decode().map_err(|e| image_error(path, e))?;
    let rgb = img.into_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(image_error(path, "empty image"));
    }
    Ok(rgb)
}

/// The bytes of a JPEG file that has its end-of-image marker. Both libjpeg and image's decoder
/// read a truncated file, filling the rest grey; PIL refuses it, and so does detrc: detections
/// on half an image are no result. (0xFFD9 cannot occur inside entropy-coded data, where every
/// 0xFF is followed by 0x00.)
fn read_whole_jpeg(path: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(path).map_err(|source| RunError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    if !data.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(image_error(path, "truncated JPEG (no end-of-image marker)"));
    }
    Ok(data)
}

/// libjpeg-turbo's decode (islow IDCT, fancy upsampling: its defaults, and PIL's), or None
/// where it fails. libjpeg reports errors by unwinding, which mozjpeg turns into panics: they
/// are caught here and never reach the user.
fn decode_jpeg(data: &[u8]) -> Option<RgbImage> {
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Option<RgbImage>> {
        let mut started = mozjpeg::Decompress::new_mem(data)?.rgb()?;
        let (w, h) = (started.width() as u32, started.height() as u32);
        let px: Vec<[u8; 3]> = started.read_scanlines()?;
        started.finish()?;
        let flat = px.into_iter().flatten().collect();
        Ok(RgbImage::from_raw(w, h, flat).filter(|i| i.width() > 0 && i.height() > 0))
    });
    decoded.ok()?.ok()?
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
    fn a_truncated_jpeg_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let whole =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images/synthetic_200x150.jpg");
        let data = std::fs::read(&whole).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
        let e = probe(&cut).unwrap_err().to_string();
        assert!(e.contains("truncated JPEG"), "{e}");
        assert!(load(&cut).is_err());
        // the whole file decodes through libjpeg-turbo, at its size
        assert_eq!(probe(&whole).unwrap(), (200, 150));
        assert_eq!(load(&whole).unwrap().dimensions(), (200, 150));
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
