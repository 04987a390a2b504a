//! Shrinks a failing mutant the way delta debugging does, one structure at a time: a removal
//! is kept when the model still fails with the same signature (the panic's place, or the kind
//! of crash or disagreement), so the result shows the same bug with less around it.

use crate::worker::Verdict;
use crate::{Args, Worker, run_one};
use onnx_protobuf::{GraphProto, ModelProto};
use protobuf::Message;
use std::path::Path;

/// What identifies a failure across shrinking steps: a panic's place (its message has numbers
/// that change), otherwise the text before the first colon (the engine, "crash", "hang").
fn signature(v: &Verdict) -> Option<String> {
    let Verdict::Failure(m) = v else { return None };
    Some(match m.split_once(" at ") {
        Some((_, at)) if m.starts_with("panic") => at.to_string(),
        _ => m.split(':').next().unwrap_or(m).to_string(),
    })
}

/// Every graph of the model, main graph first, as paths of (node, attribute) steps.
fn graphs(g: &GraphProto, path: &mut Vec<(usize, usize)>, out: &mut Vec<Vec<(usize, usize)>>) {
    out.push(path.clone());
    for (ni, n) in g.node.iter().enumerate() {
        for (ai, a) in n.attribute.iter().enumerate() {
            if let Some(sub) = a.g.as_ref() {
                path.push((ni, ai));
                graphs(sub, path, out);
                path.pop();
            }
        }
    }
}

fn graph_at<'a>(m: &'a mut ModelProto, path: &[(usize, usize)]) -> Option<&'a mut GraphProto> {
    let mut g = m.graph.as_mut()?;
    for &(ni, ai) in path {
        g = g.node.get_mut(ni)?.attribute.get_mut(ai)?.g.as_mut()?;
    }
    Some(g)
}

/// One removal: what it takes out of graph `path`, by index. None when there is no such item.
fn remove(m: &mut ModelProto, path: &[(usize, usize)], what: usize, k: usize) -> Option<()> {
    let g = graph_at(m, path)?;
    match what {
        0 => (k < g.node.len()).then(|| {
            g.node.remove(k);
        }),
        1 => (k < g.initializer.len()).then(|| {
            g.initializer.remove(k);
        }),
        2 => (k < g.output.len()).then(|| {
            g.output.remove(k);
        }),
        3 => (k < g.input.len()).then(|| {
            g.input.remove(k);
        }),
        4 => (k < g.value_info.len()).then(|| {
            g.value_info.remove(k);
        }),
        _ => {
            // Attributes, counted over the nodes in order.
            let mut k = k;
            for n in &mut g.node {
                if k < n.attribute.len() {
                    n.attribute.remove(k);
                    return Some(());
                }
                k -= n.attribute.len();
            }
            None
        }
    }
}

/// How many items of kind `what` graph `path` has.
fn count(m: &mut ModelProto, path: &[(usize, usize)], what: usize) -> Option<usize> {
    let g = graph_at(m, path)?;
    Some(match what {
        0 => g.node.len(),
        1 => g.initializer.len(),
        2 => g.output.len(),
        3 => g.input.len(),
        4 => g.value_info.len(),
        _ => g.node.iter().map(|n| n.attribute.len()).sum(),
    })
}

pub fn minimize(args: &Args, file: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut w: Option<Worker> = None;
    let mut slow = false;
    let mut check =
        |b: &[u8], w: &mut Option<Worker>| run_one(w, b, args, &mut slow).map(|v| signature(&v));
    let Some(want) = check(&bytes, &mut w)? else {
        return Err(format!("{} does not fail", file.display()));
    };
    println!("signature: {want}");
    let mut best = ModelProto::parse_from_bytes(&bytes).map_err(|e| {
        format!(
            "{} does not decode, so it cannot be shrunk by structure: {e}",
            file.display()
        )
    })?;
    let mut tries = 0;
    // Passes until nothing more can go; each pass walks the items from the end so that a
    // removal does not shift the ones still to try.
    loop {
        let mut changed = false;
        let mut paths = Vec::new();
        if let Some(g) = best.graph.as_ref() {
            graphs(g, &mut Vec::new(), &mut paths);
        }
        for path in paths.iter().rev() {
            for what in 0..6 {
                let Some(n) = count(&mut best, path, what) else {
                    continue;
                };
                for k in (0..n).rev() {
                    let mut m = best.clone();
                    if remove(&mut m, path, what, k).is_none() {
                        continue;
                    }
                    let Ok(b) = m.write_to_bytes() else { continue };
                    tries += 1;
                    if check(&b, &mut w)?.as_deref() == Some(want.as_str()) {
                        best = m;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let out = file.with_extension("min.onnx");
    let b = best
        .write_to_bytes()
        .map_err(|e| format!("cannot serialize: {e}"))?;
    std::fs::write(&out, &b).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!(
        "{} bytes -> {} bytes after {tries} tries: {}",
        bytes.len(),
        b.len(),
        out.display()
    );
    Ok(true)
}
