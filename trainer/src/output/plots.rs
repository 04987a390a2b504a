//! The plots `train_to_files` (and so `hlstmc train`) writes: training curves with plotters' SVG backend (text stays SVG
//! text, so no font library is needed), and each gate's final mask as a hand-written SVG (one
//! rectangle per run of kept connections in a row; plotters adds nothing for a bitmap).

use crate::Error;
use crate::train::{Record, Session};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

type Series<'a> = Vec<(&'a str, RGBColor, Vec<(f64, f64)>)>;

/// Epochs `[from, to]` (1-based, inclusive) of one phase of the schedule.
struct Span {
    phase: &'static str,
    from: f64,
    to: f64,
}

/// The shade of a phase in the plots (none for dense training).
fn shade(phase: &str) -> Option<(RGBColor, &'static str)> {
    match phase {
        "grow" => Some((RGBColor(200, 235, 200), "growth")),
        "prune" => Some((RGBColor(250, 215, 200), "pruning and retraining")),
        "final" => Some((RGBColor(210, 225, 250), "final training")),
        _ => None,
    }
}

/// Loss (log scale), the metric and density per epoch, one panel each, with the grow, prune
/// and final phases shaded, as SVG text.
pub fn curves(log: &[Record]) -> Result<String, Error> {
    let mut loss: Series = vec![("train", BLUE, vec![]), ("validation", RED, vec![])];
    let mut metric: Series = vec![
        ("train accuracy", BLUE, vec![]),
        ("validation accuracy", RED, vec![]),
    ];
    let mut dens: Series = vec![("density", BLACK, vec![])];
    let mut spans: Vec<Span> = Vec::new();
    let mut bpc = false;
    for r in log {
        if let Record::Epoch {
            epoch,
            phase,
            loss: l,
            accuracy,
            val_loss,
            val_accuracy,
            val_bpc,
            density,
            ..
        } = r
        {
            let x = *epoch as f64;
            match spans.last_mut() {
                Some(s) if s.phase == *phase => s.to = x,
                _ => spans.push(Span {
                    phase,
                    from: x,
                    to: x,
                }),
            }
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
        let root = SVGBackend::with_string(&mut text, (900, 1000)).into_drawing_area();
        draw_curves(&root, bpc, &spans, &loss, &metric, &dens).map_err(e)?;
    }
    Ok(text)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_curves(
    root: &Area,
    bpc: bool,
    spans: &[Span],
    loss: &Series,
    metric: &Series,
    dens: &Series,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|x| format!("{x}"))?;
    let panels = root.split_evenly((3, 1));
    let (title, unit) = if bpc {
        ("validation bits per character", "bits per character")
    } else {
        ("accuracy", "fraction right")
    };
    // Legends where the curves usually are not: loss and density fall, accuracy rises (bits
    // per character fall).
    use SeriesLabelPosition::{LowerRight, UpperRight};
    let metric_at = if bpc { UpperRight } else { LowerRight };
    // A log axis where the loss spans more than a decade (else the late epochs are flat); a
    // linear one, with readable ticks, where it does not.
    let (lo, hi) = y_range(loss, true);
    let loss_panel = if hi / lo > 10.0 {
        ("loss (cross-entropy, log scale)", "nats", true, UpperRight)
    } else {
        ("loss (cross-entropy)", "nats", false, UpperRight)
    };
    panel(&panels[0], loss_panel, spans, loss)?;
    panel(&panels[1], (title, unit, false, metric_at), spans, metric)?;
    let dens_panel = (
        "density of the weight matrices",
        "kept / all",
        false,
        UpperRight,
    );
    panel(&panels[2], dens_panel, spans, dens)?;
    root.present().map_err(|x| format!("{x}"))
}

/// The range of the finite values of `series` (log: of the positive ones), padded.
fn y_range(series: &Series, log: bool) -> (f64, f64) {
    let ys = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .filter(|y| y.is_finite() && (!log || *y > 0.0));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    match (lo.is_finite(), log) {
        (false, true) => (0.01, 1.0),
        (false, false) => (0.0, 1.0),
        (true, true) => (lo / 1.3, hi * 1.3),
        (true, false) => {
            let pad = ((hi - lo) * 0.05).max(1e-3);
            (lo - pad, hi + pad)
        }
    }
}

/// A panel: its title, the y axis's unit, whether that axis is logarithmic, and where the
/// legend goes.
type PanelSpec<'a> = (&'a str, &'a str, bool, SeriesLabelPosition);

fn panel(area: &Area, spec: PanelSpec, spans: &[Span], series: &Series) -> Result<(), String> {
    let (name, unit, log, legend_at) = spec;
    let x1 = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(2.0f64, f64::max);
    let (y0, y1) = y_range(series, log);
    let err = |x: &dyn std::fmt::Display| format!("{x}");
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(name, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64);
    // One body for both y axes; the coordinate types differ.
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(|x| err(&x))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(unit)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_labels(if log { 12 } else { 10 })
                .draw()
                .map_err(|x| err(&x))?;
            // The schedule's phases as bands behind the curves, each named once in the legend.
            let mut named = Vec::new();
            for s in spans {
                let Some((color, label)) = shade(s.phase) else {
                    continue;
                };
                // Translucent, so the grid shows through.
                let fill = color.mix(0.6).filled();
                let band = Rectangle::new([(s.from - 0.5, y0), (s.to + 0.5, y1)], fill);
                let drawn = chart
                    .draw_series(std::iter::once(band))
                    .map_err(|x| err(&x))?;
                if !named.contains(&label) {
                    named.push(label);
                    drawn
                        .label(label)
                        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], fill));
                }
            }
            for (label, color, pts) in series {
                let c = *color;
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(|x| err(&x))?
                    .label(*label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(legend_at)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|x| err(&x))
        }};
    }
    if log {
        draw!(builder.build_cartesian_2d(0.0..x1 + 0.5, (y0..y1).log_scale()))
    } else {
        draw!(builder.build_cartesian_2d(0.0..x1 + 0.5, y0..y1))
    }
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

/// The masks side by side, black = kept: a matrix [rows, cols] multiplies its input from the
/// left (`x @ W`), so rows are inputs and columns outputs, as the axis labels say. Each panel's
/// slot is at least as wide as its title, so titles are not cut.
fn svg(panels: &[Panel]) -> String {
    let big = panels.iter().map(|p| p.rows.max(p.cols)).max().unwrap_or(1);
    let s = (400 / big.max(1)).clamp(1, 8);
    let (gap, top, left, bottom) = (24, 40, 22, 30);
    // About 7 pixels a character of the 12-pixel title.
    let title = |p: &Panel| format!("{} [{}x{}]", p.label, p.rows, p.cols);
    let slot = |p: &Panel| (p.cols * s).max(7 * title(p).len()).max(150);
    let width: usize = panels.iter().map(|p| left + slot(p) + gap).sum::<usize>() + gap;
    let height = panels.iter().map(|p| p.rows * s).max().unwrap_or(0) + top + bottom + gap;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let mut x0 = gap + left;
    for p in panels {
        let kept = p.bits.iter().filter(|&&b| b).count();
        let (w, h) = (p.cols * s, p.rows * s);
        let _ = writeln!(
            out,
            "<text x=\"{x0}\" y=\"16\" font-family=\"sans-serif\" font-size=\"12\">{}</text><text x=\"{x0}\" y=\"32\" font-family=\"sans-serif\" font-size=\"11\">{kept} kept ({:.1}%)</text>",
            title(p),
            100.0 * kept as f64 / p.bits.len().max(1) as f64
        );
        let _ = writeln!(
            out,
            "<text x=\"{x0}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"11\">columns: {} outputs</text><text transform=\"translate({},{top}) rotate(-90)\" text-anchor=\"end\" font-family=\"sans-serif\" font-size=\"11\">rows: {} inputs</text>",
            top + h + 16,
            p.cols,
            x0 - 6,
            p.rows
        );
        let _ = writeln!(
            out,
            "<rect x=\"{x0}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" fill=\"#eee\" stroke=\"#999\"/>"
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
        x0 += slot(p) + gap + left;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, phase: &'static str, loss: f64, density: f64) -> Record {
        Record::Epoch {
            epoch,
            phase,
            round: 0,
            lr: 0.01,
            loss,
            accuracy: 0.5,
            grad_norm: 1.0,
            val_loss: loss * 1.1,
            val_accuracy: 0.5,
            val_bpc: None,
            density,
            nonzeros: 10,
        }
    }

    /// The curves name the axes and shade each phase once in the legend; a loss spanning more
    /// than a decade gets a log axis, one that does not a linear one.
    #[test]
    fn curves_shade_phases_and_scale_the_loss() {
        let phases = ["train", "train", "grow", "prune", "prune", "final"];
        let falling: Vec<Record> = phases
            .iter()
            .enumerate()
            .map(|(k, p)| epoch(k + 1, p, 2.0 / 4f64.powi(k as i32), 0.5))
            .collect();
        let svg = curves(&falling).unwrap();
        for text in [
            "log scale",
            "epoch",
            "nats",
            "kept / all",
            "growth",
            "pruning and retraining",
            "final training",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        let entries = svg.lines().filter(|l| l.trim() == "growth").count();
        assert_eq!(entries, 3, "one legend entry per panel");
        let flat: Vec<Record> = (1..5)
            .map(|k| epoch(k, "train", 1.0 + k as f64 * 0.1, 1.0))
            .collect();
        let svg = curves(&flat).unwrap();
        assert!(!svg.contains("log scale") && !svg.contains("growth"));
    }

    /// Mask panels say which axis is which, and a long title widens its panel instead of
    /// running into the next.
    #[test]
    fn mask_panels_are_labelled_and_fit_their_titles() {
        let panel = |label: &str, rows, cols| Panel {
            label: label.to_string(),
            rows,
            cols,
            bits: vec![true; rows * cols],
        };
        let text = svg(&[
            panel("a_rather_long_parameter_name.W0", 4, 3),
            panel("b", 4, 3),
        ]);
        assert!(text.contains("rows: 4 inputs") && text.contains("columns: 3 outputs"));
        // The second panel starts after the first one's title (7 px a character).
        let xs: Vec<usize> = text
            .match_indices("<text x=\"")
            .map(|(i, _)| {
                let rest = &text[i + 9..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        let first = xs[0];
        let second = *xs.iter().find(|&&x| x > first).unwrap();
        assert!(second - first >= 7 * "a_rather_long_parameter_name.W0 [4x3]".len());
    }
}
