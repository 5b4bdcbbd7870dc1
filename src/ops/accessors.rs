//! Attribute and input accessors that hide opset differences: where an operator keeps its
//! axes or split sizes at a given opset, and the defaults that changed with the opset. The
//! evaluator, the type rules and the passes read these instead of comparing opsets.

use crate::load::proto::AttributeProto;
use crate::tensor::attrs;

/// Where an operator's `axes` (or a Split's sizes) are at an opset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The named attribute.
    Attribute(&'static str),
    /// An input slot (optional: absent means "all axes" or "equal parts").
    Input(usize),
}

/// Where the `axes` of Squeeze, Unsqueeze and the reductions are: an attribute before opset 13
/// (18 for the reductions other than ReduceSum), the second input from then on. `None` for an
/// operator without axes.
pub fn axes_place(op: &str, opset: i64) -> Option<Place> {
    let from_input = match op {
        "Squeeze" | "Unsqueeze" | "ReduceSum" => opset >= 13,
        t if t.starts_with("Reduce") => opset >= 18,
        _ => return None,
    };
    Some(if from_input {
        Place::Input(1)
    } else {
        Place::Attribute("axes")
    })
}

/// The sizes of a Split: the `split` attribute before opset 13, the second input after.
pub fn split_place(opset: i64) -> Place {
    if opset >= 13 {
        Place::Input(1)
    } else {
        Place::Attribute("split")
    }
}

/// Reads what `place` names: the attribute, or the integer input through `input`.
/// `Some(None)` where it is absent; `None` where an input is there but not known.
pub fn ints_at(
    place: Place,
    at: &[AttributeProto],
    input: impl FnOnce(usize) -> Option<Option<Vec<i64>>>,
) -> Option<Option<Vec<i64>>> {
    match place {
        Place::Attribute(name) => Some(attrs::ints(at, name)),
        Place::Input(k) => input(k),
    }
}

/// Softmax's and LogSoftmax's default axis: 1 (flattening from there on) before opset 13,
/// the last axis alone from then on.
pub fn softmax_default_axis(opset: i64) -> i64 {
    if opset >= 13 {
        -1
    } else {
        1
    }
}

/// Softmax before opset 13 normalises over every axis from `axis` on (the input flattened to
/// 2-D there); from opset 13 over `axis` alone.
pub fn softmax_flattens(opset: i64) -> bool {
    opset < 13
}

/// The axes an `Along` operator mixes, as (its axis, and whether every later axis too):
/// LayerNormalization from `axis` through the last; CumSum along the axis of its second input
/// (`axis_input`); Softmax, LogSoftmax and Hardmax along `axis` alone from opset 13 and from
/// `axis` through the last before; LpNormalization along `axis`. `None` for other operators
/// and for a CumSum whose axis is not known.
pub fn mixed_axes(
    op: &str,
    at: &[AttributeProto],
    axis_input: Option<i64>,
    opset: i64,
) -> Option<(i64, bool)> {
    match op {
        "LayerNormalization" => Some((attrs::int_or(at, "axis", -1), true)),
        "CumSum" => Some((axis_input?, false)),
        "Softmax" | "LogSoftmax" | "Hardmax" => Some((
            attrs::int_or(at, "axis", softmax_default_axis(opset)),
            softmax_flattens(opset),
        )),
        "LpNormalization" => Some((attrs::int_or(at, "axis", -1), false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_move_to_inputs_at_13_and_18() {
        assert_eq!(axes_place("Unsqueeze", 12), Some(Place::Attribute("axes")));
        assert_eq!(axes_place("Unsqueeze", 13), Some(Place::Input(1)));
        assert_eq!(axes_place("ReduceSum", 13), Some(Place::Input(1)));
        assert_eq!(axes_place("ReduceMean", 17), Some(Place::Attribute("axes")));
        assert_eq!(axes_place("ReduceMean", 18), Some(Place::Input(1)));
        assert_eq!(axes_place("Relu", 18), None);
        assert_eq!(split_place(12), Place::Attribute("split"));
        assert_eq!(split_place(13), Place::Input(1));
        assert_eq!(softmax_default_axis(12), 1);
        assert_eq!(softmax_default_axis(13), -1);
    }

    #[test]
    fn mixed_axes_follow_the_opset() {
        assert_eq!(mixed_axes("Softmax", &[], None, 12), Some((1, true)));
        assert_eq!(mixed_axes("Softmax", &[], None, 13), Some((-1, false)));
        let at = vec![attrs::make_int("axis", 2)];
        assert_eq!(
            mixed_axes("LayerNormalization", &at, None, 17),
            Some((2, true))
        );
        assert_eq!(mixed_axes("CumSum", &[], Some(0), 17), Some((0, false)));
        assert_eq!(mixed_axes("CumSum", &[], None, 17), None);
        assert_eq!(mixed_axes("Relu", &[], None, 17), None);
    }

    #[test]
    fn ints_at_reads_attribute_or_input() {
        let at = vec![attrs::make_ints("axes", vec![0, 2])];
        assert_eq!(
            ints_at(Place::Attribute("axes"), &at, |_| unreachable!()),
            Some(Some(vec![0, 2]))
        );
        assert_eq!(
            ints_at(Place::Input(1), &at, |k| Some(Some(vec![k as i64]))),
            Some(Some(vec![1]))
        );
        assert_eq!(
            ints_at(Place::Attribute("split"), &at, |_| None),
            Some(None)
        );
    }
}
