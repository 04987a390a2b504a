//! ONNX export: graphs written as ONNX and imported back compute what they computed before
//! (forward and reverse recurrences as Scans with outer-scope weights, body constants, Gemm
//! transposes, shape ops, symbolic dims), and ops without an ONNX form are errors.

use hlstm_frontends::onnx::{export::export, import_bytes};
use hlstm_ir::{Tensor, interp, text};
use protobuf::Message;

const RNN: &str = r#"
graph (%x: f32[3,N,2], %h0: f32[N,2]) -> (hT = %hT, ys = %ys, back = %bT, logits = %logits) {
  %W = const f32[2,2] [0.5, -0.25, 0.75, 0.125]
  %R = const f32[2,2] [0.1, 0.2, -0.3, 0.4]
  %hT, %ys = recurrence{carried=1, scanned=1, invariant=2, reverse=false, seq_lens=false}(%h0, %x, %W, %R) "rnn" : f32[N,2], f32[3,N,2]
    body (%h: f32[N,2], %xt: f32[N,2], %Wb: f32[2,2], %Rb: f32[2,2]) -> (h = %h1, y = %h1) {
      %xw = matmul(%xt, %Wb) : f32[N,2]
      %hr = gemm{alpha=1.0, beta=1.0, trans_a=false, trans_b=true}(%h, %Rb) : f32[N,2]
      %s = add(%xw, %hr) : f32[N,2]
      %k = const f32[] [0.5]
      %s2 = mul(%s, %k) : f32[N,2]
      %h1 = tanh(%s2) : f32[N,2]
    }
  %bT = recurrence{carried=1, scanned=1, invariant=1, reverse=true, seq_lens=false}(%h0, %ys, %W) "back" : f32[N,2]
    body (%c: f32[N,2], %yt: f32[N,2], %Wc: f32[2,2]) -> (c = %c1) {
      %m = matmul(%yt, %Wc) : f32[N,2]
      %a = add(%m, %c) : f32[N,2]
      %c1 = sigmoid(%a) : f32[N,2]
    }
  %logits = log_softmax{axis=-1}(%bT) : f32[N,2]
}
"#;

fn roundtrip(src: &str) -> hlstm_ir::Graph {
    let g = text::parse(src).unwrap_or_else(|e| panic!("{e}"));
    let bytes = export(&g, "test").unwrap().write_to_bytes().unwrap();
    import_bytes(&bytes, None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn recurrences_round_trip() {
    let g = text::parse(RNN).unwrap();
    let back = roundtrip(RNN);
    assert_eq!(back.inputs.len(), 2);
    let names: Vec<&str> = back.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["hT", "ys", "back", "logits"]);
    for n in [1, 4] {
        let x = Tensor::from_f32(
            &[3, n, 2],
            (0..6 * n).map(|i| (i as f32 * 0.37).sin()).collect(),
        )
        .unwrap();
        let h0 = Tensor::from_f32(&[n, 2], (0..2 * n).map(|i| i as f32 * 0.1).collect()).unwrap();
        let want = interp::run(&g, &[x.clone(), h0.clone()]).unwrap();
        let got = interp::run(&back, &[x, h0]).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.shape(), b.shape());
            let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
            assert!(
                a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-6),
                "{a} vs {b}"
            );
        }
    }
}

#[test]
fn weights_are_outer_initializers_read_by_name() {
    let g = text::parse(RNN).unwrap();
    let m = export(&g, "test").unwrap();
    let inits: Vec<&str> = m
        .graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert!(inits.contains(&"W") && inits.contains(&"R"), "{inits:?}");
    let scan = m.graph.node.iter().find(|n| n.op_type == "Scan").unwrap();
    assert_eq!(scan.input.len(), 2, "states and scanned inputs only");
    let body = scan
        .attribute
        .iter()
        .find(|a| a.name == "body")
        .unwrap()
        .g
        .as_ref()
        .unwrap();
    assert!(body.node.iter().any(|n| n.input.iter().any(|i| i == "W")));
    assert!(body.initializer.iter().any(|t| t.name.ends_with('k')));
    let back = m
        .graph
        .node
        .iter()
        .filter(|n| n.op_type == "Scan")
        .nth(1)
        .unwrap();
    assert!(
        back.attribute
            .iter()
            .any(|a| a.name == "scan_input_directions" && a.ints == [1])
    );
}

#[test]
fn ops_without_an_onnx_form_are_errors() {
    let src =
        "graph (%x: f32[2]) -> (y = %y) {\n  %y = affine{alpha=2.0, beta=1.0}(%x) : f32[2]\n}\n";
    let g = text::parse(src).unwrap_or_else(|e| panic!("{e}"));
    let e = export(&g, "test").unwrap_err();
    assert!(e.contains("affine"), "{e}");
}
