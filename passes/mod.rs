//! The passes, one file each. `registry()` lists them in default pipeline order.

use crate::pass::Pass;

pub mod to_fp16;

pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![Box::new(to_fp16::ToFp16::default())]
}

/// Names of all passes, in default order.
pub fn names() -> Vec<&'static str> {
    registry().iter().map(|p| p.name()).collect()
}

pub fn by_name(name: &str) -> Option<Box<dyn Pass>> {
    registry().into_iter().find(|p| p.name() == name)
}
