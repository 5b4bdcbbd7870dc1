//! The DETR-specific passes (`Pass::detr_specific`): they match structures only DETR
//! exports have, and report "not applicable" on other models.

pub mod fold_mask;
pub mod prune_aux_heads;
