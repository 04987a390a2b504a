//! Run-time bools and integers in the kernel IR (issue 15, Keras `Masking`): comparisons, logic,
//! `not`, `where` with a computed condition and `reduce_sum`, lowered to f32 masks of 0 and 1,
//! and run by the kernel interpreter against the graph interpreter: on random values, on the
//! values where a lowering could go wrong (equal operands, signed zeros, subnormals, values
//! whose difference overflows, NaN and infinities), and inside a recurrence that carries its
//! state over masked steps. The differences from IEEE that docs/kernels.md lists are asserted
//! exactly, and so are the errors for what stays unsupported.

use hlstm_ir::kernel::{Program, Stmt, interp};
use hlstm_ir::text::parse;
use hlstm_ir::{Graph, Tensor};
use hlstm_passes::lower::{LowerOptions, lower};
use hlstm_passes::verify_each::random_inputs;
use hlstm_passes::{DEFAULT_PIPELINE, PassManager};

/// Special operand pairs (a, b), one per element.
const PAIRS: [(f32, f32); 20] = [
    (1.0, 1.0),
    (1.0, 2.0),
    (2.0, 1.0),
    (0.0, -0.0),
    (-0.0, 0.0),
    (1e-45, 0.0),
    (0.0, 1e-45),
    (-1e-45, 1e-45),
    (1.1754942e-38, 1.1754944e-38),
    (3e38, -3e38),
    (-3e38, 3e38),
    (f32::NAN, 1.0),
    (1.0, f32::NAN),
    (f32::NAN, f32::NAN),
    (f32::INFINITY, 1.0),
    (1.0, f32::INFINITY),
    (f32::NEG_INFINITY, 1.0),
    (f32::INFINITY, f32::NEG_INFINITY),
    (f32::INFINITY, f32::INFINITY),
    (f32::NEG_INFINITY, f32::NEG_INFINITY),
];
const N: usize = PAIRS.len();

fn compare_graph() -> String {
    format!(
        r#"graph (%a: f32[{N}], %b: f32[{N}]) -> (eq = %eq, lt = %lt, gt = %gt, le = %le, ge = %ge) {{
  %e = equal(%a, %b) : bool[{N}]
  %l = less(%a, %b) : bool[{N}]
  %g = greater(%a, %b) : bool[{N}]
  %le_b = less_or_equal(%a, %b) : bool[{N}]
  %ge_b = greater_or_equal(%a, %b) : bool[{N}]
  %eq = cast{{to=f32}}(%e) : f32[{N}]
  %lt = cast{{to=f32}}(%l) : f32[{N}]
  %gt = cast{{to=f32}}(%g) : f32[{N}]
  %le = cast{{to=f32}}(%le_b) : f32[{N}]
  %ge = cast{{to=f32}}(%ge_b) : f32[{N}]
}}"#
    )
}

fn lowered(g: &Graph) -> Program {
    lower(g, &LowerOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32").iter().copied().collect()
}

fn tensors(g: &Graph, inputs: &[Vec<f32>]) -> Vec<Tensor> {
    g.inputs
        .iter()
        .zip(inputs)
        .map(|(n, v)| {
            let dims = g.nodes[*n].results[0].ty.concrete().expect("static");
            Tensor::from_f32(&dims, v.clone()).expect("shape")
        })
        .collect()
}

/// Runs `g` on `inputs` in the graph interpreter and, lowered, in the kernel interpreter.
fn both(g: &Graph, inputs: &[Vec<f32>]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let want: Vec<Vec<f32>> = hlstm_ir::interp::run(g, &tensors(g, inputs))
        .expect("the graph interpreter runs")
        .iter()
        .map(f32s)
        .collect();
    let p = lowered(g);
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let got = interp::run(&p, &refs).expect("the kernel interpreter runs");
    (want, got)
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
}

#[test]
fn comparisons_are_exact_except_equal_infinities() {
    let g = parse(&compare_graph()).unwrap();
    let a: Vec<f32> = PAIRS.iter().map(|p| p.0).collect();
    let b: Vec<f32> = PAIRS.iter().map(|p| p.1).collect();
    let (want, got) = both(&g, &[a.clone(), b.clone()]);
    let names = [
        "equal",
        "less",
        "greater",
        "less_or_equal",
        "greater_or_equal",
    ];
    for (k, name) in names.iter().enumerate() {
        for i in 0..N {
            let (x, y) = PAIRS[i];
            // The documented difference: a - b of two equal infinities is NaN, so equal,
            // less_or_equal and greater_or_equal say false where IEEE says true.
            let equal_inf = x.is_infinite() && x == y;
            let differs = equal_inf && k != 1 && k != 2;
            if differs {
                assert_eq!(want[k][i], 1.0, "{name}({x}, {y}) in the interpreter");
                assert_eq!(got[k][i], 0.0, "{name}({x}, {y}) in the kernel IR");
            } else {
                assert_eq!(got[k][i], want[k][i], "{name}({x}, {y})");
            }
        }
    }
    // NaN compares false everywhere, in both.
    for k in 0..names.len() {
        assert_eq!(&got[k][11..14], &[0.0; 3], "{}", names[k]);
    }
    // The comparisons are an is_* unary on a difference.
    let p = lowered(&g);
    let unaries: Vec<&'static str> = p
        .body
        .iter()
        .filter_map(|s| match s {
            Stmt::Unary { op, .. } => Some(op.name()),
            _ => None,
        })
        .collect();
    for act in ["is_zero", "is_positive", "is_non_negative"] {
        assert!(unaries.contains(&act), "{unaries:?}");
    }
}

#[test]
fn logic_not_where_and_sums_match_the_interpreter() {
    // Masks from comparisons of random values with 0, combined every way; where and
    // reduce_sum on them; casts of the bools and the integer sums back to f32.
    let text = r#"graph (%x: f32[3,4,5], %y: f32[3,4,5]) -> (and = %andf, or = %orf, xor = %xorf, not = %notf, w = %w, wb = %wbf, s_last = %s_last, s_mid = %s_mid, s_all = %s_all, s_keep = %s_keep, cnt = %cntf, none = %none) {
  %zero = const f32[] [0.0]
  %p = greater(%x, %zero) : bool[3,4,5]
  %q = less_or_equal(%y, %zero) : bool[3,4,5]
  %and = and(%p, %q) : bool[3,4,5]
  %or = or(%p, %q) : bool[3,4,5]
  %xor = xor(%p, %q) : bool[3,4,5]
  %nq = not(%q) : bool[3,4,5]
  %andf = cast{to=f32}(%and) : f32[3,4,5]
  %orf = cast{to=f32}(%or) : f32[3,4,5]
  %xorf = cast{to=f32}(%xor) : f32[3,4,5]
  %notf = cast{to=f32}(%nq) : f32[3,4,5]
  %w = where(%p, %x, %y) : f32[3,4,5]
  %tru = const bool[] [true]
  %wb = where(%q, %tru, %p) : bool[3,4,5]
  %wbf = cast{to=f32}(%wb) : f32[3,4,5]
  %ax_last = const i64[1] [-1]
  %ax_mid = const i64[2] [0, 2]
  %s_last = reduce_sum{keepdims=false, noop_with_empty_axes=false}(%x, %ax_last) : f32[3,4]
  %s_mid = reduce_sum{keepdims=true, noop_with_empty_axes=false}(%x, %ax_mid) : f32[1,4,1]
  %s_all = reduce_sum{keepdims=false, noop_with_empty_axes=false}(%y) : f32[]
  %s_keep = reduce_sum{keepdims=true, noop_with_empty_axes=true}(%y) : f32[3,4,5]
  %pi = cast{to=i64}(%p) : i64[3,4,5]
  %cnt = reduce_sum{keepdims=true, noop_with_empty_axes=false}(%pi, %ax_last) : i64[3,4,1]
  %cntf = cast{to=f32}(%cnt) : f32[3,4,1]
  %none = cast{to=f32}(%pi) : f32[3,4,5]
}"#;
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    hlstm_ir::verify::verify(&g).unwrap();
    for seed in [1, 2, 3] {
        let inputs: Vec<Vec<f32>> = random_inputs(&g, seed).iter().map(f32s).collect();
        let (want, got) = both(&g, &inputs);
        for (k, (w, o)) in want.iter().zip(&got).enumerate() {
            let (_, v) = &g.outputs[k];
            let name = &g.value_info(*v).name;
            if name.starts_with("s_") {
                // Float sums: f64 accumulation in the interpreter, f32 in the kernel IR.
                for (a, b) in w.iter().zip(o) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                        "{name}: {a} vs {b}"
                    );
                }
            } else {
                assert!(same_bits(w, o), "{name}: {w:?}\nvs {o:?}");
            }
        }
        // The masks are masks.
        assert!(got[0].iter().all(|v| *v == 0.0 || *v == 1.0));
        assert!(
            got[10]
                .iter()
                .all(|v| v.fract() == 0.0 && (0.0..=5.0).contains(v))
        );
    }
    // And the same after the default pipeline.
    let mut optimized = g.clone();
    PassManager::new(DEFAULT_PIPELINE, Default::default())
        .unwrap()
        .run(&mut optimized, &mut std::io::sink())
        .unwrap();
    let inputs: Vec<Vec<f32>> = random_inputs(&g, 9).iter().map(f32s).collect();
    let (want, _) = both(&g, &inputs);
    let (_, got) = both(&optimized, &inputs);
    assert!(same_bits(&want[0], &got[0]) && same_bits(&want[4], &got[4]));
}

/// where(m, x, y) as m·x + (1 - m)·y: exact for finite x and y, NaN where the branch not
/// taken is infinite or NaN (docs/kernels.md).
#[test]
fn where_with_a_computed_condition_on_special_values() {
    let text = r#"graph (%m: f32[6], %x: f32[6], %y: f32[6]) -> (w = %w) {
  %c = cast{to=bool}(%m) : bool[6]
  %w = where(%c, %x, %y) : f32[6]
}"#;
    let g = parse(text).unwrap();
    let m = vec![1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
    let x = vec![-0.0, 5.0, 3e38, 2.0, 1.0, f32::INFINITY];
    let y = vec![7.0, -0.0, -3e38, f32::NAN, f32::INFINITY, 4.0];
    let (want, got) = both(&g, &[m, x, y]);
    assert_eq!(want[0][..3], [-0.0, -0.0, 3e38]);
    // Finite: the same values (zeros may lose their sign).
    assert_eq!(got[0][..3], [0.0, 0.0, 3e38]);
    assert_eq!(want[0][3..], [2.0, 1.0, 4.0]);
    assert!(got[0][3..].iter().all(|v| v.is_nan()), "{:?}", got[0]);
}

/// A recurrence that carries its state unchanged over masked steps, as tf2onnx writes a Keras
/// layer behind `Masking`: the mask is computed from the input outside the loop and scanned.
#[test]
fn masked_recurrence_carries_the_state_over_masked_steps() {
    let text = r#"graph (%x: f32[5,2,3], %h0: f32[2,3]) -> (h = %h, ys = %ys) {
  %zero = const f32[] [0.0]
  %e = equal(%x, %zero) : bool[5,2,3]
  %ne = not(%e) : bool[5,2,3]
  %nf = cast{to=f32}(%ne) : f32[5,2,3]
  %ax = const i64[1] [-1]
  %cnt = reduce_sum{keepdims=true, noop_with_empty_axes=true}(%nf, %ax) : f32[5,2,1]
  %m = greater(%cnt, %zero) : bool[5,2,1]
  %h, %ys = recurrence{carried=1, scanned=2, invariant=0, reverse=false, seq_lens=false}(%h0, %x, %m) "rnn" : f32[2,3], f32[5,2,3]
    body (%hi: f32[2,3], %xt: f32[2,3], %mt: bool[2,1]) -> (h = %hn, y = %hn) {
      %R = const f32[3,3] [0.5, -0.25, 0.125, 1.0, 0.3, -0.7, 0.2, 0.1, -0.4]
      %hr = matmul(%hi, %R) : f32[2,3]
      %s = add(%xt, %hr) : f32[2,3]
      %cand = tanh(%s) : f32[2,3]
      %mf = cast{to=f32}(%mt) : f32[2,1]
      %nm = not(%mt) : bool[2,1]
      %nmf = cast{to=f32}(%nm) : f32[2,1]
      %a = mul(%mf, %cand) : f32[2,3]
      %b = mul(%nmf, %hi) : f32[2,3]
      %hn = add(%a, %b) : f32[2,3]
    }
}"#;
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    hlstm_ir::verify::verify(&g).unwrap();
    let mut x: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    // Row 0: steps 3 and 4 are padding; row 1: step 1.
    for t in [3, 4] {
        x[t * 6..t * 6 + 3].fill(0.0);
    }
    x[6 + 3..6 + 6].fill(0.0);
    x[3] = 0.0; // one zero feature alone does not mask a step
    let h0 = vec![0.1, -0.2, 0.3, 0.4, 0.5, -0.6];
    let (want, got) = both(&g, &[x, h0]);
    for (w, o) in want.iter().zip(&got) {
        for (a, b) in w.iter().zip(o) {
            assert!((a - b).abs() <= 1e-6, "{w:?}\nvs {o:?}");
        }
    }
    let ys = &got[1];
    let row = |t: usize, r: usize| &ys[t * 6 + r * 3..t * 6 + r * 3 + 3];
    assert_eq!(row(3, 0), row(2, 0));
    assert_eq!(row(4, 0), row(2, 0));
    assert_eq!(row(1, 1), row(0, 1));
    assert_ne!(row(2, 1), row(1, 1));
    assert_ne!(row(1, 0), row(0, 0));
}

#[test]
fn what_stays_unsupported_is_refused_with_the_node() {
    // A run-time f32 cast to an integer would need truncation.
    let g = parse(
        r#"graph (%x: f32[4]) -> (y = %y) {
  %i = cast{to=i64}(%x) : i64[4]
  %y = cast{to=f32}(%i) : f32[4]
}"#,
    )
    .unwrap();
    let e = lower(&g, &LowerOptions::default()).unwrap_err();
    assert!(
        e.contains("node") && e.contains("cast") && e.contains("integer type"),
        "{e}"
    );
    // Integer arithmetic at run time (division truncates).
    let g = parse(
        r#"graph (%x: f32[4]) -> (y = %y) {
  %zero = const f32[] [0.0]
  %p = greater(%x, %zero) : bool[4]
  %i = cast{to=i64}(%p) : i64[4]
  %d = div(%i, %i) : i64[4]
  %y = cast{to=f32}(%d) : f32[4]
}"#,
    )
    .unwrap();
    let e = lower(&g, &LowerOptions::default()).unwrap_err();
    assert!(e.contains("node '") && e.contains("(div)"), "{e}");
    // A bool output.
    let g = parse(
        r#"graph (%x: f32[4]) -> (y = %p) {
  %zero = const f32[] [0.0]
  %p = greater(%x, %zero) : bool[4]
}"#,
    )
    .unwrap();
    let e = lower(&g, &LowerOptions::default()).unwrap_err();
    assert!(e.contains("output 'y'") && e.contains("bool"), "{e}");
}
