//! Cleanup: passes that remove or simplify operators without computing anything new:
//! no-ops, identity round trips, dead code, duplicates, and Gather indices in their plainest
//! form. Much of what they remove is left behind by the other groups.

pub mod canonicalize_gather;
pub mod cse;
pub mod dead_code;
pub mod eliminate_noops;
pub mod identity_chains;
pub mod slice_concat;
