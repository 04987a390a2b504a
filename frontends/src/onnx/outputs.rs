//! Declared graph outputs against what the importer infers. ONNX Runtime runs a model whose
//! output `ValueInfo` says one shape while its nodes compute another, and warns when it sees
//! the run's real shape; hlstmc says so at import, naming both types. Where the two cannot
//! both hold (another element type, another rank) it is an error naming the node that makes
//! the output.

use super::ImportError;
use hlstm_ir::{Dim, Graph, Op, TensorType, Value};
use std::collections::HashMap;

/// Compares the declared type of output `name` with the type of `v`, the value that computes
/// it. Ok(None): they agree (or the declaration says too little to tell); Ok(Some(warning)):
/// known dims differ, which ONNX Runtime runs with a warning; Err: another element type or
/// rank.
pub fn check(
    g: &Graph,
    name: &str,
    declared: &TensorType,
    v: Value,
) -> Result<Option<String>, ImportError> {
    let computed = g.value_type(v);
    let what = || {
        format!(
            "output '{name}' is declared {declared} but computes {computed} ({})",
            producer(g, v)
        )
    };
    if declared.dtype != computed.dtype {
        return Err(ImportError::Model(format!(
            "{}: the element types differ",
            what()
        )));
    }
    let (Some(d), Some(c)) = (&declared.shape, &computed.shape) else {
        return Ok(None);
    };
    if d.len() != c.len() {
        return Err(ImportError::Model(format!(
            "{}: the ranks differ ({} and {})",
            what(),
            d.len(),
            c.len()
        )));
    }
    // Known dims that differ, or one declared symbol standing for two different known dims
    // (declared [B,B], computed [2,3]): a warning, as ONNX Runtime runs such a model and warns.
    let mut bound: HashMap<&str, usize> = HashMap::new();
    let mut differ = false;
    for (dd, cd) in d.iter().zip(c) {
        match (dd, cd) {
            (Dim::Known(a), Dim::Known(b)) => differ |= a != b,
            (Dim::Sym(s), Dim::Known(b)) => {
                differ |= *bound.entry(s.as_str()).or_insert(*b) != *b;
            }
            _ => {}
        }
    }
    Ok(differ.then(what))
}

/// "made by node 'n' (matmul)", or the graph input or constant the output is.
fn producer(g: &Graph, v: Value) -> String {
    let n = &g.nodes[v.node];
    match &n.op {
        Op::Input => format!("it is the graph input '{}'", n.name),
        Op::Const(c) => format!("it is the constant '{}'", c.name),
        op => format!("made by node '{}' ({})", n.name, op.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hlstm_ir::DType;

    fn ty(dtype: DType, dims: &[Dim]) -> TensorType {
        TensorType {
            dtype,
            shape: Some(dims.to_vec()),
        }
    }

    fn graph(computed: TensorType) -> (Graph, Value) {
        let mut g = Graph::new();
        let x = g.add_input("X", computed.clone());
        let y = g.add_node(
            "relu1",
            Op::Unary(hlstm_ir::Act::Relu),
            &[Some(x)],
            vec![hlstm_ir::ValueInfo {
                name: "Y".into(),
                ty: computed,
            }],
        );
        (g, Value { node: y, slot: 0 })
    }

    use Dim::{Known as K, Sym as S};

    #[test]
    fn known_dims_that_differ_warn_naming_both_types_and_the_node() {
        let b = || S("B".into());
        let (g, v) = graph(ty(DType::F32, &[K(1), b(), K(16)]));
        let w = check(&g, "Y", &ty(DType::F32, &[K(2), b(), K(16)]), v)
            .expect("a warning, not an error")
            .expect("a warning");
        assert!(
            w.starts_with("output 'Y' is declared f32[2,B,16] but computes f32[1,B,16]"),
            "{w}"
        );
        assert!(w.contains("node 'relu1'"), "{w}");
        // What agrees, or what the declaration leaves open, says nothing.
        for declared in [
            ty(DType::F32, &[K(1), b(), K(16)]),
            ty(DType::F32, &[S("N".into()), Dim::Unknown, K(16)]),
            TensorType {
                dtype: DType::F32,
                shape: None,
            },
        ] {
            assert_eq!(check(&g, "Y", &declared, v).unwrap(), None, "{declared}");
        }
    }

    #[test]
    fn one_symbol_for_two_known_dims_warns() {
        let (g, v) = graph(ty(DType::F32, &[K(2), K(3)]));
        let n = || S("N".into());
        assert!(
            check(&g, "Y", &ty(DType::F32, &[n(), n()]), v)
                .unwrap()
                .is_some()
        );
        let (g, v) = graph(ty(DType::F32, &[K(3), K(3)]));
        assert_eq!(
            check(&g, "Y", &ty(DType::F32, &[n(), n()]), v).unwrap(),
            None
        );
    }

    #[test]
    fn another_element_type_or_rank_is_an_error_naming_output_types_and_node() {
        let (g, v) = graph(ty(DType::F32, &[K(1), K(16)]));
        let e = check(&g, "Y", &ty(DType::I64, &[K(1), K(16)]), v)
            .unwrap_err()
            .to_string();
        for part in ["'Y'", "i64[1,16]", "f32[1,16]", "relu1", "element types"] {
            assert!(e.contains(part), "'{part}' missing from: {e}");
        }
        let e = check(&g, "Y", &ty(DType::F32, &[K(1), K(1), K(16)]), v)
            .unwrap_err()
            .to_string();
        for part in [
            "'Y'",
            "f32[1,1,16]",
            "f32[1,16]",
            "relu1",
            "ranks differ (3 and 2)",
        ] {
            assert!(e.contains(part), "'{part}' missing from: {e}");
        }
    }
}
