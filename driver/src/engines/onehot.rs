//! Integer class inputs for the kernel IR, which computes in f32 only. An integer graph input
//! whose every use selects rows with `gather{axis=0}` (labels and tokens: the one-hot of a loss,
//! an embedding) is rewritten into an f32 one-hot input with one more axis of the table's row
//! count, which the engine fills from the indices on every run: a gather of an identity becomes
//! the one-hot itself, a gather of anything else a matmul by it. Other integer inputs (sequence
//! lengths) are left to the lowering.

use crate::{Error, Result};
use hlstm_ir::{DType, Dim, Graph, Op, TensorType, Value, ValueInfo};

/// How the engine feeds graph input k to the program.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Feed {
    /// As it is (f32, or integer sequence lengths as f32 whole numbers).
    Plain,
    /// Integer class indices expanded to a one-hot over `classes` (a last axis).
    OneHot { classes: usize },
}

/// Rewrites every integer input used only as `gather{axis=0}` row indices of tables with a
/// known row count into a one-hot f32 input; returns how to feed each input.
pub(crate) fn onehot_inputs(g: &mut Graph) -> Result<Vec<Feed>> {
    let mut feeds = Vec::new();
    for n in g.inputs.clone() {
        let ty = g.nodes[n].results[0].ty.clone();
        let users = g.users(n);
        // The row count of each use's table, where every use is a row selection.
        let rows: Option<Vec<usize>> = users
            .iter()
            .map(|(u, port)| match (&g.nodes[*u].op, port.in_slot) {
                (Op::Gather { axis: 0 }, 1) => g.operands(*u)[0]
                    .and_then(|t| g.value_type(t).concrete())
                    .and_then(|d| d.first().copied()),
                _ => None,
            })
            .collect();
        let classes = match rows.as_deref() {
            Some([first, rest @ ..]) if ty.dtype != DType::F32 => {
                if let Some(other) = rest.iter().find(|r| *r != first) {
                    return Err(Error::Lower(format!(
                        "integer input '{}' indexes tables of {first} and {other} rows",
                        g.nodes[n].name
                    )));
                }
                *first
            }
            _ => {
                feeds.push(Feed::Plain);
                continue;
            }
        };
        let name = g.nodes[n].name.clone();
        let dims = ty.concrete().ok_or_else(|| {
            Error::Lower(format!(
                "input '{name}' has type {ty}: the kernel IR needs static shapes"
            ))
        })?;
        let mut onehot_dims: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d)).collect();
        onehot_dims.push(Dim::Known(classes));
        g.nodes[n].results[0].ty = TensorType::new(DType::F32, onehot_dims);
        let onehot = Value { node: n, slot: 0 };
        for (u, _) in users {
            let Some(table) = g.operands(u)[0] else {
                continue;
            };
            let result = Value { node: u, slot: 0 };
            let replacement = if is_identity(g, table, classes) {
                onehot
            } else {
                let info = g.nodes[u].results[0].clone();
                let mm = g.add_node(
                    &format!("{}.onehot_mm", g.nodes[u].name),
                    Op::MatMul,
                    &[Some(onehot), Some(table)],
                    vec![ValueInfo {
                        name: format!("{}.onehot_mm", info.name),
                        ty: info.ty,
                    }],
                );
                Value { node: mm, slot: 0 }
            };
            g.replace_uses(result, replacement);
            g.nodes.remove_node(u);
        }
        feeds.push(Feed::OneHot { classes });
    }
    Ok(feeds)
}

/// Whether `v` is the constant identity matrix of order `n`.
fn is_identity(g: &Graph, v: Value, n: usize) -> bool {
    let Some(a) = g.constant(v).and_then(|c| c.value.as_f32()) else {
        return false;
    };
    a.shape() == [n, n]
        && a.indexed_iter()
            .all(|(ix, &x)| x == if ix[0] == ix[1] { 1.0 } else { 0.0 })
}

/// Fills `dst` with the one-hot rows of integer indices `t` over `classes`.
pub(crate) fn fill_onehot(
    name: &str,
    t: &hlstm_ir::Tensor,
    classes: usize,
    dst: &mut Vec<f32>,
) -> Result<()> {
    let idx = t
        .to_i64_vec()
        .ok_or_else(|| Error::input(name, format!("is {}, expected integers", t.dtype())))?;
    dst.clear();
    dst.resize(idx.len() * classes, 0.0);
    for (row, &i) in idx.iter().enumerate() {
        if i < 0 || i as usize >= classes {
            return Err(Error::input(
                name,
                format!("index {i} at {row} is out of range 0..{classes}"),
            ));
        }
        dst[row * classes + i as usize] = 1.0;
    }
    Ok(())
}
