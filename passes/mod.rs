//! The passes, one file each. `registry()` lists them in default pipeline order.

use crate::pass::Pass;

pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![]
}

/// Names of all passes, in default order.
pub fn names() -> Vec<&'static str> {
    registry().iter().map(|p| p.name()).collect()
}

pub fn by_name(name: &str) -> Option<Box<dyn Pass>> {
    registry().into_iter().find(|p| p.name() == name)
}
