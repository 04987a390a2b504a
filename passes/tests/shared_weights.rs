//! Weights are held once from import to the kernel program (BENCHMARKS.md, "Memory"): the
//! optimizer's e-graph takes a constant's tensor and gives the same tensor back, and the
//! lowering reads a row-major graph constant in place instead of copying it.

use hlstm_frontends::onnx::import_file;
use hlstm_ir::{Graph, Op};
use hlstm_passes::lower::{LowerOptions, lower};
use hlstm_passes::{DEFAULT_PIPELINE, PassManager};
use std::collections::HashSet;
use std::path::Path;

fn lstm_fixture() -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models/lstm_std_H64_X32_T8/model.onnx");
    import_file(&path).expect("the fixture imports")
}

/// Where the f32 data of each constant of `g` and its bodies with at least 1024 elements is.
fn weights(g: &Graph, out: &mut HashSet<usize>) {
    for n in g.nodes.node_weights() {
        match &n.op {
            Op::Const(c) => {
                if let Some(a) = c.value.as_f32()
                    && a.len() >= 1024
                {
                    out.insert(a.as_ptr() as usize);
                }
            }
            Op::Recurrence(r) => weights(&r.body, out),
            _ => {}
        }
    }
}

fn run(g: &mut Graph, passes: &[&str]) {
    let pm = PassManager::new(passes, Default::default()).expect("pipeline");
    pm.run(g, &mut std::io::sink()).expect("the passes run");
}

#[test]
fn saturation_gives_back_the_weights_it_took() {
    let mut g = lstm_fixture();
    let mut before = HashSet::new();
    weights(&g, &mut before);
    assert_eq!(before.len(), 2, "the cell's W and R, transposed at import");
    run(&mut g, &["saturate"]);
    let mut after = HashSet::new();
    weights(&g, &mut after);
    assert_eq!(
        after, before,
        "a weight saturation left as it was is the same tensor"
    );
}

#[test]
fn the_lowering_reads_row_major_weights_in_place() {
    let mut g = lstm_fixture();
    run(&mut g, DEFAULT_PIPELINE);
    let mut graph_weights = HashSet::new();
    weights(&g, &mut graph_weights);
    assert!(!graph_weights.is_empty());
    let p = lower(&g, &LowerOptions::default()).expect("the fixture lowers");
    let program_weights: HashSet<usize> =
        p.consts.iter().map(|c| c.data.as_ptr() as usize).collect();
    assert!(
        graph_weights.is_subset(&program_weights),
        "every large weight of the graph is read in place: {} of {} shared",
        graph_weights.intersection(&program_weights).count(),
        graph_weights.len()
    );
}
