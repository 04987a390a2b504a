//! Mutants of the seed models: structured edits of the decoded ONNX model (attributes, dims,
//! element types, op types, names, wiring, initializer data, subgraphs, opsets) and edits of the
//! serialized bytes. Everything is drawn from one seeded generator, so a (seed, case) pair
//! always gives the same mutant.

use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use protobuf::Message;
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::IndexedRandom;

pub type Rng = Xoshiro256PlusPlus;

/// A seed model: its file, bytes and decoded form.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
    pub model: ModelProto,
}

/// Op types to swap in: every op type of the corpus, and a few the importer does not know.
pub fn op_pool(seeds: &[&Seed]) -> Vec<String> {
    let mut ops: Vec<String> = Vec::new();
    for s in seeds {
        if let Some(g) = s.model.graph.as_ref() {
            collect_ops(g, &mut ops);
        }
    }
    ops.extend(["NoSuchOp", "LSTM", "Scan", "Loop", "If"].map(String::from));
    ops.sort();
    ops.dedup();
    ops
}

fn collect_ops(g: &GraphProto, ops: &mut Vec<String>) {
    for n in &g.node {
        ops.push(n.op_type.clone());
        for a in &n.attribute {
            a.g.as_ref()
                .into_iter()
                .chain(&a.graphs)
                .for_each(|s| collect_ops(s, ops));
        }
    }
}

/// What was done to make a mutant, for the failure report.
pub struct Mutant {
    pub bytes: Vec<u8>,
    pub seed_name: String,
    pub steps: Vec<String>,
}

/// One mutant of a seed drawn by `rng`: one to four structured edits, then (sometimes) byte
/// edits of the result; or byte edits alone.
/// The seed is drawn from a folder drawn first, so that the many small ONNX node tests do not
/// crowd out the recurrent models.
pub fn mutant(groups: &[Vec<Seed>], ops: &[String], rng: &mut Rng) -> Mutant {
    let seeds = &groups[rng.random_range(0..groups.len())];
    let seed = &seeds[rng.random_range(0..seeds.len())];
    let mut steps = Vec::new();
    let mut bytes = if rng.random_bool(0.1) {
        seed.bytes.clone()
    } else {
        let mut m = seed.model.clone();
        // Mostly one edit: each edit more makes a model the importer rejects more likely.
        let edits = [1, 1, 1, 1, 2, 2, 3, 4].choose(rng).copied().unwrap_or(1);
        for _ in 0..edits {
            steps.push(structured(&mut m, ops, rng));
        }
        // Serializing a message the generated code built cannot fail short of memory; an
        // error here is the harness's and is reported as such by the caller.
        m.write_to_bytes().unwrap_or_default()
    };
    if steps.is_empty() || rng.random_bool(0.1) {
        for _ in 0..rng.random_range(1..=3) {
            steps.push(bytewise(&mut bytes, seeds, rng));
        }
    }
    Mutant {
        bytes,
        seed_name: seed.name.clone(),
        steps,
    }
}

/// Graphs of a model in depth-first order: the main graph first, then every subgraph.
fn graph_count(g: &GraphProto) -> usize {
    1 + g
        .node
        .iter()
        .flat_map(|n| &n.attribute)
        .flat_map(|a| a.g.as_ref().into_iter().chain(&a.graphs))
        .map(graph_count)
        .sum::<usize>()
}

fn nth_graph<'a>(g: &'a mut GraphProto, n: &mut usize) -> Option<&'a mut GraphProto> {
    if *n == 0 {
        return Some(g);
    }
    *n -= 1;
    for node in &mut g.node {
        for a in &mut node.attribute {
            if let Some(sub) = a.g.as_mut()
                && let Some(found) = nth_graph(sub, n)
            {
                return Some(found);
            }
            for sub in &mut a.graphs {
                if let Some(found) = nth_graph(sub, n) {
                    return Some(found);
                }
            }
        }
    }
    None
}

/// Integers that break things: bounds, signs, off-by-one, sizes that overflow.
fn interesting_int(old: i64, rng: &mut Rng) -> i64 {
    let pool = [
        0,
        1,
        -1,
        2,
        3,
        -2,
        7,
        64,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_mul(2),
        old.wrapping_neg(),
        1 << 16,
        1 << 31,
        1 << 40,
        i64::MAX,
        i64::MIN,
        i32::MAX as i64,
    ];
    if rng.random_bool(0.2) {
        rng.random_range(-8..=8)
    } else {
        *pool.choose(rng).unwrap_or(&0)
    }
}

fn interesting_float(old: f32, rng: &mut Rng) -> f32 {
    let pool = [
        0.0,
        1.0,
        -1.0,
        0.5,
        old * 2.0,
        -old,
        old + 1.0,
        1e-30,
        1e30,
        -1e30,
        10.0,
    ];
    *pool.choose(rng).unwrap_or(&0.0)
}

const STRINGS: [&str; 12] = [
    "Tanh",
    "Sigmoid",
    "Relu",
    "HardSigmoid",
    "forward",
    "reverse",
    "bidirectional",
    "",
    "Affine",
    "NoSuchActivation",
    "LeakyRelu",
    "ScaledTanh",
];

/// ONNX element types: the ones hlstmc carries, others it does not, and values that are none.
const DTYPES: [i32; 12] = [1, 6, 7, 9, 2, 3, 10, 11, 16, 8, 0, 99];

/// Names of every value a graph mentions (inputs, initializers, node outputs).
fn value_names(g: &GraphProto) -> Vec<String> {
    let mut v: Vec<String> = g.input.iter().map(|i| i.name.clone()).collect();
    v.extend(g.initializer.iter().map(|t| t.name.clone()));
    v.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    v
}

fn pick_name(g: &GraphProto, rng: &mut Rng) -> String {
    let names = value_names(g);
    match rng.random_range(0..10) {
        0 => String::new(),
        1 => "no_such_value".into(),
        _ => names.choose(rng).cloned().unwrap_or_default(),
    }
}

/// One structured edit of `m`; returns what it did.
fn structured(m: &mut ModelProto, ops: &[String], rng: &mut Rng) -> String {
    if rng.random_range(0..20) == 0 {
        return model_level(m, rng);
    }
    let Some(main) = m.graph.as_mut() else {
        return "no graph".into();
    };
    // Subgraphs (Scan bodies) get half the edits when there are any: they are where H-LSTMs live.
    let count = graph_count(main);
    let mut n = if count > 1 && rng.random_bool(0.5) {
        rng.random_range(1..count)
    } else {
        0
    };
    let which = n;
    let Some(g) = nth_graph(main, &mut n) else {
        return "no graph".into();
    };
    let what = match rng.random_range(0..9) {
        0 => attribute(g, rng),
        1 => value_info(g, rng),
        2 => initializer_shape(g, rng),
        3 => op_type(g, ops, rng),
        4 => names(g, rng),
        5 => wiring(g, rng),
        6 | 7 => initializer_data(g, rng),
        _ => subgraph(g, rng),
    };
    format!("graph {which}: {what}")
}

fn model_level(m: &mut ModelProto, rng: &mut Rng) -> String {
    match rng.random_range(0..4) {
        0 => {
            if let Some(o) = m.opset_import.choose_mut(rng) {
                o.version = interesting_int(o.version, rng).clamp(-1, 30);
            }
            "opset version".into()
        }
        1 => {
            m.opset_import.clear();
            "no opset import".into()
        }
        2 => {
            m.ir_version = interesting_int(m.ir_version, rng);
            "ir version".into()
        }
        _ => {
            if let Some(o) = m.opset_import.choose_mut(rng) {
                o.domain = "com.example".into();
            }
            "opset domain".into()
        }
    }
}

use rand::seq::IndexedMutRandom;

fn attribute(g: &mut GraphProto, rng: &mut Rng) -> String {
    let with_attrs: Vec<usize> = (0..g.node.len())
        .filter(|&i| !g.node[i].attribute.is_empty())
        .collect();
    let Some(&ni) = with_attrs.choose(rng) else {
        return "no attribute".into();
    };
    let node = &mut g.node[ni];
    let ai = rng.random_range(0..node.attribute.len());
    let a: &mut AttributeProto = &mut node.attribute[ai];
    let name = a.name.clone();
    match rng.random_range(0..8) {
        0 => a.i = interesting_int(a.i, rng),
        1 => a.f = interesting_float(a.f, rng),
        2 => {
            if a.ints.is_empty() || rng.random_bool(0.2) {
                a.ints.push(interesting_int(0, rng));
            } else {
                let k = rng.random_range(0..a.ints.len());
                match rng.random_range(0..3) {
                    0 => a.ints[k] = interesting_int(a.ints[k], rng),
                    1 => {
                        a.ints.remove(k);
                    }
                    _ => a.ints.push(a.ints[k]),
                }
            }
        }
        3 => {
            if let Some(f) = a.floats.choose_mut(rng) {
                *f = interesting_float(*f, rng);
            } else {
                a.floats.push(interesting_float(0.0, rng));
            }
        }
        4 => {
            let s = STRINGS
                .choose(rng)
                .copied()
                .unwrap_or("")
                .as_bytes()
                .to_vec();
            if a.strings.is_empty() {
                a.s = s;
            } else {
                let k = rng.random_range(0..a.strings.len());
                a.strings[k] = s;
            }
        }
        5 => {
            node.attribute.remove(ai);
            return format!("node {ni}: attribute {name} removed");
        }
        6 => {
            let copy = node.attribute[ai].clone();
            node.attribute.push(copy);
            return format!("node {ni}: attribute {name} duplicated");
        }
        _ => {
            // Another type tag than the value it carries.
            let t = rng.random_range(0..15);
            a.type_ = protobuf::EnumOrUnknown::from_i32(t);
        }
    }
    format!("node {ni}: attribute {name} changed")
}

fn value_info(g: &mut GraphProto, rng: &mut Rng) -> String {
    let total = g.input.len() + g.output.len() + g.value_info.len();
    if total == 0 {
        return "no value info".into();
    }
    let k = rng.random_range(0..total);
    let vi: &mut ValueInfoProto = if k < g.input.len() {
        &mut g.input[k]
    } else if k < g.input.len() + g.output.len() {
        &mut g.output[k - g.input.len()]
    } else {
        &mut g.value_info[k - g.input.len() - g.output.len()]
    };
    let name = vi.name.clone();
    let t = vi.type_.mut_or_insert_default().mut_tensor_type();
    if rng.random_bool(0.25) {
        t.elem_type = *DTYPES.choose(rng).unwrap_or(&1);
        return format!("value {name}: element type {}", t.elem_type);
    }
    let shape = t.shape.mut_or_insert_default();
    match rng.random_range(0..5) {
        0 | 1 => {
            if let Some(d) = shape.dim.choose_mut(rng) {
                let old = if d.has_dim_value() { d.dim_value() } else { 1 };
                d.set_dim_value(interesting_int(old, rng));
            }
        }
        2 => {
            if let Some(d) = shape.dim.choose_mut(rng) {
                let p = ["N", "T", "batch", ""].choose(rng).copied().unwrap_or("N");
                d.set_dim_param(p.to_string());
            }
        }
        3 => {
            if !shape.dim.is_empty() {
                let k = rng.random_range(0..shape.dim.len());
                shape.dim.remove(k);
            }
        }
        _ => {
            let mut d = onnx_protobuf::tensor_shape_proto::Dimension::new();
            d.set_dim_value(rng.random_range(1..4));
            let k = rng.random_range(0..=shape.dim.len());
            shape.dim.insert(k, d);
        }
    }
    format!("value {name}: shape")
}

fn pick_initializer<'a>(g: &'a mut GraphProto, rng: &mut Rng) -> Option<&'a mut TensorProto> {
    g.initializer.choose_mut(rng)
}

fn initializer_shape(g: &mut GraphProto, rng: &mut Rng) -> String {
    let Some(t) = pick_initializer(g, rng) else {
        return "no initializer".into();
    };
    match rng.random_range(0..5) {
        0 => t.data_type = *DTYPES.choose(rng).unwrap_or(&1),
        1 => {
            if let Some(d) = t.dims.choose_mut(rng) {
                *d = interesting_int(*d, rng);
            }
        }
        2 => {
            t.dims.pop();
        }
        3 => t.dims.push(1),
        _ => {
            // Reshaped to a shape with the same element count: the data still fits.
            // Wrapping: earlier edits may have left dims whose product overflows.
            let n: i64 = t.dims.iter().fold(1i64, |a, &b| a.wrapping_mul(b));
            t.dims = if rng.random_bool(0.5) {
                vec![n]
            } else {
                vec![1, n]
            };
        }
    }
    format!(
        "initializer {}: dims {:?} type {}",
        t.name, t.dims, t.data_type
    )
}

fn op_type(g: &mut GraphProto, ops: &[String], rng: &mut Rng) -> String {
    let Some(n) = g.node.choose_mut(rng) else {
        return "no node".into();
    };
    let old = std::mem::take(&mut n.op_type);
    n.op_type = ops.choose(rng).cloned().unwrap_or_default();
    format!("node {}: op {old} -> {}", n.name, n.op_type)
}

fn names(g: &mut GraphProto, rng: &mut Rng) -> String {
    let new = pick_name(g, rng);
    match rng.random_range(0..5) {
        0 => {
            let Some(n) = g.node.choose_mut(rng) else {
                return "no node".into();
            };
            n.name = new;
            "node name".into()
        }
        1 => {
            let Some(n) = g.node.choose_mut(rng) else {
                return "no node".into();
            };
            if let Some(o) = n.output.choose_mut(rng) {
                *o = new;
            }
            "node output renamed".into()
        }
        2 => {
            if let Some(t) = pick_initializer(g, rng) {
                t.name = new;
            }
            "initializer renamed".into()
        }
        3 => {
            if let Some(i) = g.input.choose_mut(rng) {
                i.name = new;
            }
            "graph input renamed".into()
        }
        _ => {
            if let Some(o) = g.output.choose_mut(rng) {
                o.name = new;
            }
            "graph output renamed".into()
        }
    }
}

fn wiring(g: &mut GraphProto, rng: &mut Rng) -> String {
    if g.node.is_empty() {
        return "no node".into();
    }
    let new = pick_name(g, rng);
    let k = rng.random_range(0..g.node.len());
    match rng.random_range(0..8) {
        0 | 1 => {
            let n: &mut NodeProto = &mut g.node[k];
            if let Some(i) = n.input.choose_mut(rng) {
                *i = new;
            }
            format!("node {k}: an input rewired")
        }
        2 => {
            let n = &mut g.node[k];
            if n.input.len() >= 2 {
                let a = rng.random_range(0..n.input.len());
                let b = rng.random_range(0..n.input.len());
                n.input.swap(a, b);
            }
            format!("node {k}: inputs swapped")
        }
        3 => {
            let n = &mut g.node[k];
            if rng.random_bool(0.5) {
                n.input.pop();
            } else {
                n.input.push(new);
            }
            format!("node {k}: input count")
        }
        4 => {
            g.node.remove(k);
            format!("node {k} removed")
        }
        5 => {
            let copy = g.node[k].clone();
            let at = rng.random_range(0..=g.node.len());
            g.node.insert(at, copy);
            format!("node {k} duplicated")
        }
        6 => {
            let to = rng.random_range(0..g.node.len());
            g.node.swap(k, to);
            format!("nodes {k} and {to} swapped")
        }
        _ => {
            if g.input.len() >= 2 && rng.random_bool(0.5) {
                let a = rng.random_range(0..g.input.len());
                g.input.remove(a);
                "a graph input removed".into()
            } else if !g.output.is_empty() {
                let a = rng.random_range(0..g.output.len());
                let o = g.output[a].clone();
                if rng.random_bool(0.5) {
                    g.output.push(o);
                    "a graph output duplicated".into()
                } else {
                    g.output.remove(a);
                    "a graph output removed".into()
                }
            } else {
                "no graph output".into()
            }
        }
    }
}

/// Edits the values of a float initializer in place, keeping them finite (non-finite values are
/// outside the engines' agreement, docs/passes.md): pruning, scaling, new values; or breaks its
/// storage (truncated or extra raw bytes, data moved between fields).
fn initializer_data(g: &mut GraphProto, rng: &mut Rng) -> String {
    let Some(t) = pick_initializer(g, rng) else {
        return "no initializer".into();
    };
    let name = t.name.clone();
    if t.data_type == 1 && rng.random_range(0..6) > 0 {
        let mut v: Vec<f32> = if t.raw_data.is_empty() {
            t.float_data.clone()
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        if v.is_empty() {
            return format!("initializer {name}: empty");
        }
        let what = match rng.random_range(0..6) {
            0 => {
                // Pruning: a fraction of the weights set to zero.
                let p = [0.5, 0.9, 0.97, 1.0].choose(rng).copied().unwrap_or(0.5);
                v.iter_mut().for_each(|x| {
                    if rng.random_bool(p) {
                        *x = 0.0
                    }
                });
                format!("pruned {p}")
            }
            1 => {
                // A whole row or column block zero: dead neurons.
                let len = v.len();
                let stride = rng.random_range(1..=len.min(64));
                let start = rng.random_range(0..len);
                v.iter_mut()
                    .skip(start)
                    .step_by(stride)
                    .for_each(|x| *x = 0.0);
                "strided zeros".into()
            }
            2 => {
                let s = [2.0, -1.0, 0.25, 4.0].choose(rng).copied().unwrap_or(1.0);
                v.iter_mut().for_each(|x| *x *= s);
                format!("scaled by {s}")
            }
            3 => {
                for _ in 0..rng.random_range(1..=8) {
                    let k = rng.random_range(0..v.len());
                    v[k] = rng.random_range(-2.0..2.0);
                }
                "values changed".into()
            }
            4 => {
                let c = rng.random_range(-1.0..1.0);
                v.iter_mut().for_each(|x| *x = c);
                format!("constant {c}")
            }
            _ => {
                // Moved from raw bytes to the typed field or back.
                if t.raw_data.is_empty() {
                    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    t.float_data.clear();
                } else {
                    t.float_data = v;
                    t.raw_data.clear();
                }
                return format!("initializer {name}: storage moved");
            }
        };
        if t.raw_data.is_empty() {
            t.float_data = v;
        } else {
            t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        }
        return format!("initializer {name}: {what}");
    }
    match rng.random_range(0..4) {
        0 => {
            let keep = rng.random_range(0..=t.raw_data.len());
            t.raw_data.truncate(keep);
            t.float_data.pop();
            t.int64_data.pop();
        }
        1 => {
            t.raw_data.extend([0, 0, 0x80, 0x3f]);
            t.float_data.push(1.0);
            t.int64_data.push(1);
        }
        2 => {
            if let Some(x) = t.int64_data.choose_mut(rng) {
                *x = interesting_int(*x, rng);
            } else if t.data_type == 7 && t.raw_data.len() >= 8 {
                let k = rng.random_range(0..t.raw_data.len() / 8) * 8;
                let old = i64::from_le_bytes(t.raw_data[k..k + 8].try_into().unwrap_or([0; 8]));
                t.raw_data[k..k + 8].copy_from_slice(&interesting_int(old, rng).to_le_bytes());
            }
        }
        _ => {
            // Both storages at once, or neither.
            if rng.random_bool(0.5) {
                t.float_data.push(0.0);
            } else {
                t.raw_data.clear();
                t.float_data.clear();
                t.int64_data.clear();
            }
        }
    }
    format!("initializer {name}: storage broken")
}

fn subgraph(g: &mut GraphProto, rng: &mut Rng) -> String {
    let holders: Vec<usize> = (0..g.node.len())
        .filter(|&i| {
            g.node[i]
                .attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty())
        })
        .collect();
    let Some(&k) = holders.choose(rng) else {
        // No subgraph here: wiring of this graph instead.
        return wiring(g, rng);
    };
    let node = &mut g.node[k];
    let Some(a) = node.attribute.iter_mut().find(|a| a.g.is_some()) else {
        return "no subgraph".into();
    };
    let Some(body) = a.g.as_mut() else {
        return "no subgraph".into();
    };
    match rng.random_range(0..5) {
        0 => {
            body.node.clear();
            format!("node {k}: subgraph emptied")
        }
        1 => {
            if !body.output.is_empty() {
                let o = rng.random_range(0..body.output.len());
                body.output.remove(o);
            }
            format!("node {k}: a subgraph output removed")
        }
        2 => {
            if !body.input.is_empty() {
                let i = rng.random_range(0..body.input.len());
                body.input.remove(i);
            }
            format!("node {k}: a subgraph input removed")
        }
        3 => {
            // The subgraph reads a value of the outer graph it does not declare.
            let outer = value_names(&GraphProto {
                input: g.input.clone(),
                initializer: Vec::new(),
                node: g.node.clone(),
                ..GraphProto::new()
            });
            let name = outer.choose(rng).cloned().unwrap_or_default();
            let Some(a) = g.node[k].attribute.iter_mut().find(|a| a.g.is_some()) else {
                return "no subgraph".into();
            };
            if let Some(body) = a.g.as_mut()
                && let Some(n) = body.node.choose_mut(rng)
                && let Some(i) = n.input.choose_mut(rng)
            {
                *i = name;
            }
            format!("node {k}: subgraph reads an outer value")
        }
        _ => {
            a.g.clear();
            format!("node {k}: subgraph removed")
        }
    }
}

/// One edit of the serialized bytes; returns what it did.
fn bytewise(b: &mut Vec<u8>, seeds: &[Seed], rng: &mut Rng) -> String {
    if b.is_empty() {
        b.push(rng.random());
        return "byte added".into();
    }
    let len = b.len();
    let at = rng.random_range(0..len);
    match rng.random_range(0..8) {
        0 | 1 => {
            b[at] ^= 1 << rng.random_range(0..8);
            format!("bit flipped at {at}")
        }
        2 => {
            b[at] = [0, 0xff, 0x7f, 0x80, 0x01]
                .choose(rng)
                .copied()
                .unwrap_or(0);
            format!("byte set at {at}")
        }
        3 => {
            let n = rng.random_range(1..=(len - at).min(64));
            b.drain(at..at + n);
            format!("{n} bytes removed at {at}")
        }
        4 => {
            let n = rng.random_range(1..=(len - at).min(64));
            let chunk: Vec<u8> = b[at..at + n].to_vec();
            let to = rng.random_range(0..=b.len());
            b.splice(to..to, chunk);
            format!("{n} bytes copied from {at} to {to}")
        }
        5 => {
            b.truncate(at);
            format!("truncated at {at}")
        }
        6 => {
            let n = rng.random_range(1..=16);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            b.splice(at..at, junk);
            format!("{n} random bytes inserted at {at}")
        }
        _ => {
            // The tail of another model spliced on: a crossover.
            let other = &seeds[rng.random_range(0..seeds.len())].bytes;
            let from = rng.random_range(0..other.len().max(1));
            b.truncate(at);
            b.extend_from_slice(other.get(from..).unwrap_or(&[]));
            format!("spliced at {at} with another model from {from}")
        }
    }
}
