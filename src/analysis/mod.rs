//! Analyses over the IR that passes and the driver ask, built on the op registry: typing
//! (shapes and element types, one engine) and batch facts.

pub mod batch;
pub mod typing;
