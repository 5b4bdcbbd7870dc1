//! `If` nodes whose condition is a constant, replaced by the branch they always take, before
//! the model enters the IR (which is straight-line only).
//!
//! Exporters write an `If` where the traced code branched on a size the tracer could not
//! prove constant: DINOv3's rotary embedding (transformers' `Dinov3ViTRopePositionEmbedding`,
//! DEIMv2's backbone) tests `coords.numel() > 0` on coordinates it builds from constants. The
//! condition is then a chain of constant arithmetic ending in a comparison; evaluating that
//! chain with the same folder the pipeline uses (`fold-constants`, `Shape` of static tensors
//! included) decides the branch, whose nodes take the `If`'s place. An `If` whose condition
//! depends on the input stays an error: detrc does not compile control flow.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::load::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

/// How one `If` was resolved, for the compile's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inlined {
    pub node: String,
    pub condition: bool,
    pub branch_nodes: usize,
}

/// Replaces every top-level `If` of `model` whose condition folds to a constant by the nodes
/// of the branch it takes, repeatedly (a branch may hold `If`s of its own). Errors name the
/// first `If` whose condition is not constant.
pub fn inline_constant_ifs(model: &mut ModelProto) -> Result<Vec<Inlined>> {
    let mut done = Vec::new();
    loop {
        let Some(gp) = model.graph.as_ref() else {
            return Ok(done);
        };
        let Some(at) = gp.node.iter().position(is_if) else {
            return Ok(done);
        };
        let node = gp.node[at].clone();
        let label = node.name.clone().unwrap_or_default();
        let cond_name = node.input.first().cloned().unwrap_or_default();
        let Some(cond) = constant_condition(model, at, &cond_name)? else {
            return Err(Error::Unsupported(format!(
                "node If '{label}' has a subgraph (control flow) and its condition \
                 '{cond_name}' is not a constant; detrc handles straight-line graphs only"
            )));
        };
        let branch_name = if cond { "then_branch" } else { "else_branch" };
        let branch = node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(branch_name))
            .and_then(|a| a.g.as_deref())
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("If '{label}' has no {branch_name}")))?;
        if branch.output.len() != node.output.len() {
            return Err(Error::Invalid(format!(
                "If '{label}': its {branch_name} has {} outputs, the node {}",
                branch.output.len(),
                node.output.len()
            )));
        }
        let gp = model.graph.as_mut().expect("checked above");
        let branch_nodes = branch.node.len();
        let replacement = inline_branch(gp, &node, branch, &label);
        gp.node.splice(at..=at, replacement);
        done.push(Inlined {
            node: label,
            condition: cond,
            branch_nodes,
        });
    }
}

fn is_if(n: &NodeProto) -> bool {
    n.op_type.as_deref() == Some("If") && n.domain.as_deref().is_none_or(str::is_empty)
}

/// The value of `cond`, computed from the nodes before `at` that it depends on, or `None` if
/// it does not fold to a single boolean.
fn constant_condition(model: &ModelProto, at: usize, cond: &str) -> Result<Option<bool>> {
    let gp = model.graph.as_ref().expect("caller checked");
    // The condition's cone: the nodes before the If it depends on (the node list is in
    // topological order, so none after it), with the initializers and inputs they read.
    let producer: HashMap<&str, usize> = gp.node[..at]
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut keep = HashSet::new();
    let mut leaves = HashSet::new();
    let mut stack = vec![cond.to_string()];
    while let Some(t) = stack.pop() {
        match producer.get(t.as_str()) {
            Some(&i) => {
                if keep.insert(i) {
                    if gp.node[i]
                        .attribute
                        .iter()
                        .any(|a| a.g.is_some() || !a.graphs.is_empty())
                    {
                        return Ok(None); // an earlier control-flow node: not constant here
                    }
                    stack.extend(gp.node[i].input.iter().filter(|s| !s.is_empty()).cloned());
                }
            }
            None => {
                leaves.insert(t);
            }
        }
    }
    let mut order: Vec<usize> = keep.into_iter().collect();
    order.sort_unstable();
    let cone = GraphProto {
        node: order.iter().map(|&i| gp.node[i].clone()).collect(),
        name: Some("if-condition".into()),
        initializer: gp
            .initializer
            .iter()
            .filter(|t| leaves.contains(t.name.as_deref().unwrap_or("")))
            .cloned()
            .collect(),
        input: gp
            .input
            .iter()
            .filter(|v| leaves.contains(v.name.as_deref().unwrap_or("")))
            .cloned()
            .collect(),
        output: vec![ValueInfoProto {
            name: Some(cond.to_string()),
            ..Default::default()
        }],
        value_info: gp
            .value_info
            .iter()
            .filter(|v| leaves.contains(v.name.as_deref().unwrap_or("")))
            .cloned()
            .collect(),
        ..Default::default()
    };
    let probe = ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        graph: Some(cone),
        ..Default::default()
    };
    // A cone the importer rejects (an outer-scope name, a malformed node) is simply not a
    // constant condition; the caller reports the If.
    let Ok(mut g) = crate::ir::from_onnx::import(probe) else {
        return Ok(None);
    };
    // A dynamic-batch export reads the image's height and width off the input's partly
    // symbolic shape: those dimensions are static, so the dims taken from them are constants.
    loop {
        crate::passes::fold_constants::fold(&mut g, usize::MAX, &|_| true);
        if fold_static_dims(&mut g) == 0 {
            break;
        }
    }
    let Some(out) = g.outputs.first() else {
        return Ok(None);
    };
    let value = g
        .const_tensor(out.src)
        .and_then(|t| crate::tensor::Tensor::from_proto(t).ok());
    Ok(match value {
        Some(crate::tensor::Tensor::Bool(a)) if a.len() == 1 => a.iter().next().copied(),
        _ => None,
    })
}

/// The nodes that replace `node`: the branch's nodes, its names made unique in `gp` where they
/// clash, then one Identity per output from the branch's result to the If's output name.
fn inline_branch(
    gp: &mut GraphProto,
    node: &NodeProto,
    mut branch: GraphProto,
    label: &str,
) -> Vec<NodeProto> {
    let mut taken: HashSet<String> = gp
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(gp.initializer.iter().filter_map(|t| t.name.clone()))
        .chain(gp.input.iter().filter_map(|v| v.name.clone()))
        .collect();
    // Names the branch defines: its node outputs and its own initializers.
    let defined: Vec<String> = branch
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(branch.initializer.iter().filter_map(|t| t.name.clone()))
        .filter(|s| !s.is_empty())
        .collect();
    let mut rename = HashMap::new();
    for name in defined {
        if taken.contains(&name) {
            let mut k = 0;
            let fresh = loop {
                let c = format!("{label}/{name}_{k}");
                if !taken.contains(&c) {
                    break c;
                }
                k += 1;
            };
            rename.insert(name.clone(), fresh.clone());
            taken.insert(fresh);
        } else {
            taken.insert(name);
        }
    }
    let re = |s: &mut String| {
        if let Some(n) = rename.get(s.as_str()) {
            *s = n.clone();
        }
    };
    for n in &mut branch.node {
        rename_in_node(n, &rename);
    }
    for t in &mut branch.initializer {
        if let Some(name) = t.name.as_mut() {
            re(name);
        }
    }
    gp.initializer.append(&mut branch.initializer);
    gp.value_info
        .extend(branch.value_info.into_iter().map(|mut v| {
            if let Some(name) = v.name.as_mut() {
                re(name);
            }
            v
        }));
    let mut nodes = branch.node;
    for (i, (out, res)) in node.output.iter().zip(&branch.output).enumerate() {
        let mut res = res.name.clone().unwrap_or_default();
        re(&mut res);
        if out.is_empty() {
            continue;
        }
        nodes.push(NodeProto {
            input: vec![res],
            output: vec![out.clone()],
            name: Some(format!("{label}/output_{i}")),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
    }
    nodes
}

/// Renames the tensors `node` reads and writes, in nested subgraphs too (they may read the
/// branch's values from the outer scope).
fn rename_in_node(node: &mut NodeProto, rename: &HashMap<String, String>) {
    for s in node.input.iter_mut().chain(node.output.iter_mut()) {
        if let Some(n) = rename.get(s.as_str()) {
            *s = n.clone();
        }
    }
    for a in &mut node.attribute {
        for g in a.g.iter_mut().map(|g| &mut **g).chain(a.graphs.iter_mut()) {
            for n in &mut g.node {
                rename_in_node(n, rename);
            }
        }
    }
}

/// Replaces `Gather(Shape(x), i)` by the constant dimension where dimension `i` of `x` is
/// static though others are not; returns how many it replaced.
fn fold_static_dims(g: &mut crate::ir::Graph) -> usize {
    use crate::tensor::{attrs, Tensor};
    let mut n_done = 0;
    for n in g.topo_ops() {
        if !g.contains(n) || !g.node(n).is("Gather") {
            continue;
        }
        let (Some(data), Some(idx)) = (g.input(n, 0), g.input(n, 1)) else {
            continue;
        };
        let shape_node = data.node;
        if !g.node(shape_node).is("Shape") {
            continue;
        }
        let Some(x) = g.input(shape_node, 0) else {
            continue;
        };
        let Some(dims) = g.ty(x).and_then(|t| t.shape.clone()) else {
            continue;
        };
        let at = &g.node(shape_node).op().expect("an op").attrs;
        let r = dims.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (start, end) = (
            clamp(attrs::int_or(at, "start", 0)),
            clamp(attrs::int_or(at, "end", r)),
        );
        let seen = &dims[start..end.max(start)];
        let Some(ix) = g.const_tensor(idx).and_then(|t| Tensor::from_proto(t).ok()) else {
            continue;
        };
        let Some(ix_vals) = ix.as_i64_vec().filter(|_| ix.shape().len() <= 1) else {
            continue;
        };
        let picked: Option<Vec<i64>> = ix_vals
            .iter()
            .map(|&i| {
                let i = if i < 0 { i + seen.len() as i64 } else { i };
                seen.get(usize::try_from(i).ok()?)?.fixed()
            })
            .collect();
        let Some(picked) = picked else { continue };
        let t = if ix.shape().is_empty() {
            Tensor::scalar_i64(picked[0])
        } else {
            Tensor::vec_i64(picked)
        };
        let c = g.add_const("static_dim", t.to_proto(""));
        g.replace_all_uses(crate::ir::Port::new(n, 0), crate::ir::Port::new(c, 0));
        n_done += 1;
    }
    g.remove_dead();
    n_done
}
