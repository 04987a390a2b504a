//! The plots `train_to_files` (and so `hlstmc train`) writes: training curves with plotters' SVG backend (text stays SVG
//! text, so no font library is needed), and each gate's final mask as a hand-written SVG (one
//! rectangle per run of kept connections in a row; plotters adds nothing for a bitmap).

use crate::Error;
use crate::train::{Record, Session};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

type Series<'a> = Vec<(&'a str, RGBColor, Vec<(f64, f64)>)>;

/// Loss, the metric and density per epoch, one panel each, as SVG text.
pub fn curves(log: &[Record]) -> Result<String, Error> {
    let mut loss: Series = vec![("train", BLUE, vec![]), ("validation", RED, vec![])];
    let mut metric: Series = vec![
        ("train accuracy", BLUE, vec![]),
        ("validation accuracy", RED, vec![]),
    ];
    let mut dens: Series = vec![("density", BLACK, vec![])];
    let mut bpc = false;
    for r in log {
        if let Record::Epoch {
            epoch,
            loss: l,
            accuracy,
            val_loss,
            val_accuracy,
            val_bpc,
            density,
            ..
        } = r
        {
            let x = *epoch as f64 + 1.0;
            loss[0].2.push((x, *l));
            loss[1].2.push((x, *val_loss));
            metric[0].2.push((x, *accuracy));
            match val_bpc {
                Some(b) => {
                    bpc = true;
                    metric[1].2.push((x, *b));
                }
                None => metric[1].2.push((x, *val_accuracy)),
            }
            dens[0].2.push((x, *density));
        }
    }
    if bpc {
        // Accuracy and bits per character do not share an axis.
        metric = vec![(
            "validation bits per character",
            RED,
            metric.pop().map(|s| s.2).unwrap_or_default(),
        )];
    }
    let e = |err: String| Error::new(format!("the training curves: {err}"));
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (900, 960)).into_drawing_area();
        draw_curves(&root, bpc, &loss, &metric, &dens).map_err(e)?;
    }
    Ok(text)
}

fn draw_curves(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    bpc: bool,
    loss: &Series,
    metric: &Series,
    dens: &Series,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|x| format!("{x:?}"))?;
    let panels = root.split_evenly((3, 1));
    let title = if bpc {
        "bits per character"
    } else {
        "accuracy"
    };
    for (area, (name, series)) in panels.iter().zip([
        ("loss (cross-entropy, nats)", loss),
        (title, metric),
        ("density of the weight matrices", dens),
    ]) {
        panel(area, name, series)?;
    }
    root.present().map_err(|x| format!("{x:?}"))
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    name: &str,
    series: &Series,
) -> Result<(), String> {
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts.filter(|p| p.1.is_finite()) {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let err = |x: &dyn std::fmt::Debug| format!("{x:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x1.max(2.0), (y0 - pad)..(y1 + pad))
        .map_err(|x| err(&x))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(|x| err(&x))?;
    for (label, color, pts) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|x| err(&x))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| err(&x))
}

/// One mask panel: a matrix [rows, cols] of kept (true) and removed connections.
struct Panel {
    label: String,
    rows: usize,
    cols: usize,
    bits: Vec<bool>,
}

/// The file key of a masked parameter and its panels: H-LSTM `l0.i.W0` -> (`l0.i`, one panel);
/// LSTM `l0.W` [X+H, 4H] -> one panel per gate's column block; others keep their name.
fn gate_panels(name: &str, dims: &[usize], bits: &[bool]) -> Vec<(String, Panel)> {
    let (rows, cols) = (dims[0], dims[1]);
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 2 && parts[1] == "W" && cols % 4 == 0 {
        let h = cols / 4;
        return ["i", "f", "g", "o"]
            .iter()
            .enumerate()
            .map(|(k, g)| {
                let bits = (0..rows)
                    .flat_map(|r| {
                        bits[r * cols + k * h..r * cols + (k + 1) * h]
                            .iter()
                            .copied()
                    })
                    .collect();
                (
                    format!("{}.{g}", parts[0]),
                    Panel {
                        label: format!("{name}[:, {g}]"),
                        rows,
                        cols: h,
                        bits,
                    },
                )
            })
            .collect();
    }
    let key = if parts.len() == 3 {
        format!("{}.{}", parts[0], parts[1])
    } else {
        parts[0].to_string()
    };
    vec![(
        key,
        Panel {
            label: name.to_string(),
            rows,
            cols,
            bits: bits.to_vec(),
        },
    )]
}

fn svg(panels: &[Panel]) -> String {
    let big = panels.iter().map(|p| p.rows.max(p.cols)).max().unwrap_or(1);
    let s = (400 / big.max(1)).clamp(1, 8);
    let (gap, top) = (24, 40);
    let width: usize = panels.iter().map(|p| p.cols * s + gap).sum::<usize>() + gap;
    let height = panels.iter().map(|p| p.rows * s).max().unwrap_or(0) + top + gap;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let mut x0 = gap;
    for p in panels {
        let kept = p.bits.iter().filter(|&&b| b).count();
        let _ = writeln!(
            out,
            "<text x=\"{x0}\" y=\"16\" font-family=\"sans-serif\" font-size=\"12\">{} [{}x{}]</text><text x=\"{x0}\" y=\"32\" font-family=\"sans-serif\" font-size=\"11\">{kept} kept ({:.1}%)</text>",
            p.label,
            p.rows,
            p.cols,
            100.0 * kept as f64 / p.bits.len().max(1) as f64
        );
        let _ = writeln!(
            out,
            "<rect x=\"{x0}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"#eee\" stroke=\"#999\"/>",
            p.cols * s,
            p.rows * s
        );
        for r in 0..p.rows {
            let row = &p.bits[r * p.cols..(r + 1) * p.cols];
            let mut c = 0;
            while c < p.cols {
                if !row[c] {
                    c += 1;
                    continue;
                }
                let start = c;
                while c < p.cols && row[c] {
                    c += 1;
                }
                let _ = writeln!(
                    out,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{s}\"/>",
                    x0 + start * s,
                    top + r * s,
                    (c - start) * s
                );
            }
        }
        x0 += p.cols * s + gap;
    }
    out.push_str("</svg>\n");
    out
}

/// Each gate's (and the head's) masks as SVG text, by file key (`l0.i`, `head`): the suffix
/// of MODEL.mask.<key>.svg.
pub fn masks(s: &Session) -> Vec<(String, String)> {
    let mut files: BTreeMap<String, Vec<Panel>> = BTreeMap::new();
    for (p, m) in s.model.params.iter().zip(&s.masks) {
        if let Some(m) = m {
            for (key, panel) in gate_panels(&p.name, &p.dims, m) {
                files.entry(key).or_default().push(panel);
            }
        }
    }
    files
        .into_iter()
        .map(|(key, panels)| (key, svg(&panels)))
        .collect()
}
