//! Class names for the annotated images.

use std::path::Path;

use super::error::{Result, RunError};

/// The 91 COCO category names indexed by category id, with "N/A" for the ids COCO leaves
/// unused, exactly as the DETR reference lists them (DETR's `num_classes = 91`).
#[rustfmt::skip]
pub const COCO: [&str; 91] = [
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
];

/// The 80 COCO category names in contiguous order (label `i` is the `i`-th used COCO id), as
/// the 80-class models label them (RT-DETR, D-FINE, and their transformers ports).
pub fn coco80() -> impl Iterator<Item = &'static str> {
    COCO.iter().copied().filter(|n| *n != "N/A")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    /// COCO names when the model has 91 or 80 classes, class numbers otherwise.
    Auto,
    /// COCO: by id for models of 91 classes, contiguous 80 for others (see [`Labels::resolve`]).
    Coco,
    /// The contiguous 80-name COCO list.
    Coco80,
    Names(Vec<String>),
}

impl Labels {
    /// `coco`, or a file with one class name per line (line N names class N).
    pub fn parse(spec: &str) -> Result<Labels> {
        if spec == "coco" {
            return Ok(Labels::Coco);
        }
        let path = Path::new(spec);
        let text = std::fs::read_to_string(path).map_err(|e| RunError::Labels {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let names: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').trim().to_string())
            .collect();
        if names.iter().all(|n| n.is_empty()) {
            return Err(RunError::Labels {
                path: path.to_path_buf(),
                reason: "no names in the file (expected one class name per line)".into(),
            });
        }
        Ok(Labels::Names(names))
    }

    /// Resolves `Auto` and `Coco` for a model with `num_classes` real classes (softmax: logit
    /// width minus one; sigmoid: logit width; `None` for graphs that decode themselves).
    /// 91 classes are COCO ids; 80 classes are contiguous COCO labels, and so are the labels of
    /// the official RT-DETR / D-FINE deploy graphs, which `coco` therefore means for them.
    pub fn resolve(self, num_classes: Option<usize>) -> Labels {
        match (self, num_classes) {
            (Labels::Auto, Some(91)) => Labels::Coco,
            (Labels::Auto | Labels::Coco, Some(80)) | (Labels::Coco, None) => Labels::Coco80,
            (other, _) => other,
        }
    }

    /// The display name of class `id`; ids without a name show as their number.
    pub fn name(&self, id: usize) -> String {
        let named = match self {
            Labels::Coco => COCO.get(id).map(|s| s.to_string()),
            Labels::Coco80 => coco80().nth(id).map(str::to_string),
            Labels::Names(v) => v.get(id).filter(|s| !s.is_empty()).cloned(),
            Labels::Auto => None,
        };
        named.unwrap_or_else(|| format!("class {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_matches_detr_ids() {
        assert_eq!(COCO.len(), 91);
        assert_eq!(COCO[1], "person");
        assert_eq!(COCO[12], "N/A");
        assert_eq!(COCO[90], "toothbrush");
        assert_eq!(Labels::Auto.resolve(Some(91)).name(3), "car");
        assert_eq!(Labels::Auto.resolve(Some(10)).name(3), "class 3");
        assert_eq!(Labels::Auto.resolve(None).name(3), "class 3");
        // contiguous: label 2 is car, 79 toothbrush
        assert_eq!(coco80().count(), 80);
        assert_eq!(Labels::Auto.resolve(Some(80)).name(2), "car");
        assert_eq!(Labels::Coco.resolve(None).name(79), "toothbrush");
        assert_eq!(Labels::Coco.resolve(Some(91)).name(90), "toothbrush");
    }

    #[test]
    fn file_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.txt");
        std::fs::write(&p, "cat\r\ndog\n\nbird\n").unwrap();
        let l = Labels::parse(p.to_str().unwrap()).unwrap();
        assert_eq!(l.name(1), "dog");
        assert_eq!(l.name(2), "class 2");
        assert_eq!(l.name(3), "bird");
        assert_eq!(l.name(9), "class 9");
        std::fs::write(&p, "\n\n").unwrap();
        assert!(Labels::parse(p.to_str().unwrap()).is_err());
        assert!(Labels::parse("/nonexistent/labels.txt").is_err());
    }
}
