//! Annotated images: box outlines and "name score" tags, drawn with a built-in 5x7 bitmap font
//! (upper case, digits and common punctuation) so no font file or text-rendering crate is
//! needed.

use image::{Rgb, RgbImage};

use super::labels::Labels;
use super::postprocess::Detection;

const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;

/// Rows of a glyph, top to bottom; bit 4 is the leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '&' => [0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '\'' => [0x04, 0x04, 0x08, 0, 0, 0, 0],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04], // '?'
    }
}

/// Distinct, saturated colours; a class keeps its colour across images.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 190],
];

/// The colour of the `i`-th detection's mask: instances of one class differ.
pub fn instance_colour(i: usize) -> [u8; 3] {
    PALETTE[(i * 3 + 1) % PALETTE.len()]
}

/// Paints `colour` at 45% opacity where the row-major `bits` (the image's size) are set.
pub fn blend_mask(img: &mut RgbImage, bits: &[u8], colour: [u8; 3]) {
    if bits.len() != img.as_raw().len() / 3 {
        return;
    }
    for (p, &on) in img.pixels_mut().zip(bits) {
        if on != 0 {
            for (v, &k) in p.0.iter_mut().zip(&colour) {
                *v = ((55 * u32::from(*v) + 45 * u32::from(k) + 50) / 100) as u8;
            }
        }
    }
}

fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            img.put_pixel(x as u32, y as u32, c);
        }
    }
}

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: u32, c: Rgb<u8>) {
    let sc = scale as i64;
    for (i, ch) in s.chars().enumerate() {
        let gx = x + i as i64 * (GLYPH_W as i64 + 1) * sc;
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..GLYPH_W as i64 {
                if bits & (0x10 >> col) != 0 {
                    let px = gx + col * sc;
                    let py = y + row as i64 * sc;
                    fill(img, px, py, px + sc, py + sc, c);
                }
            }
        }
    }
}

/// Width and height in pixels of `s` drawn at `scale`.
pub fn text_size(s: &str, scale: u32) -> (u32, u32) {
    let n = s.chars().count() as u32;
    let w = if n == 0 { 0 } else { n * (GLYPH_W + 1) - 1 };
    (w * scale, GLYPH_H * scale)
}

/// Draws every detection onto a copy of the image: an outline in the class colour and a tag
/// "name 0.87" on a filled strip above the box (inside it when the box touches the top).
pub fn annotate(img: &RgbImage, dets: &[Detection], labels: &Labels) -> RgbImage {
    let mut out = img.clone();
    let short = img.width().min(img.height());
    let thick = (short / 200).max(1) as i64;
    let scale = (short / 300).clamp(1, 4);
    // lowest scores first, so the strongest detections end up on top
    let mut order: Vec<&Detection> = dets.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    for d in order {
        let col = Rgb(PALETTE[d.category_id % PALETTE.len()]);
        let [bx, by, bw, bh] = d.bbox;
        if !(bx.is_finite() && by.is_finite() && bw.is_finite() && bh.is_finite()) {
            continue;
        }
        let clamp = |v: f32| v.round().clamp(-1e6, 1e6) as i64;
        let (x0, y0) = (clamp(bx), clamp(by));
        let (x1, y1) = (clamp(bx + bw), clamp(by + bh));
        fill(&mut out, x0, y0, x1, y0 + thick, col);
        fill(&mut out, x0, y1 - thick, x1, y1, col);
        fill(&mut out, x0, y0, x0 + thick, y1, col);
        fill(&mut out, x1 - thick, y0, x1, y1, col);

        let tag = format!("{} {:.2}", labels.name(d.category_id), d.score);
        let (tw, th) = text_size(&tag, scale);
        let pad = scale as i64;
        let strip_h = th as i64 + 2 * pad;
        let tx = x0.clamp(0, (img.width() as i64 - tw as i64 - 2 * pad).max(0));
        let ty = if y0 - strip_h >= 0 {
            y0 - strip_h
        } else {
            y0.max(0)
        };
        fill(
            &mut out,
            tx,
            ty,
            tx + tw as i64 + 2 * pad,
            ty + strip_h,
            col,
        );
        let [r, g, b] = col.0;
        let luma = 299 * r as u32 + 587 * g as u32 + 114 * b as u32;
        let ink = if luma > 140_000 {
            Rgb([0, 0, 0])
        } else {
            Rgb([255, 255, 255])
        };
        text(&mut out, tx + pad, ty + pad, &tag, scale, ink);
    }
    out
}

/// PNG bytes of an image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut buf = Vec::new();
    img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut buf))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_inside_its_size() {
        let mut img = RgbImage::new(40, 10);
        text(&mut img, 1, 1, "A1", 1, Rgb([255, 0, 0]));
        let (w, h) = text_size("A1", 1);
        assert_eq!((w, h), (11, 7));
        let mut lit = 0;
        for (x, y, p) in img.enumerate_pixels() {
            if p.0 != [0, 0, 0] {
                lit += 1;
                assert!((1..1 + w).contains(&x) && (1..1 + h).contains(&y));
            }
        }
        assert!(lit > 10);
    }

    #[test]
    fn annotate_marks_box_and_survives_wild_boxes() {
        let img = RgbImage::from_pixel(64, 48, Rgb([0, 0, 0]));
        let d = |bbox| Detection {
            image: "x".into(),
            category_id: 1,
            score: 0.9,
            bbox,
            segmentation: None,
        };
        let dets = [
            d([10.0, 20.0, 30.0, 20.0]),
            d([-1e30, f32::NAN, 5.0, 5.0]),
            d([-50.0, -50.0, 1e9, 1e9]),
        ];
        let out = annotate(&img, &dets, &Labels::Coco);
        assert_ne!(out.get_pixel(10, 30).0, [0, 0, 0]);
        assert_ne!(out, img);
    }
}
