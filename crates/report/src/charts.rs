//! The report's charts, each an SVG document drawn with `plotters`' SVG backend.
//!
//! `plotters` has no Sankey series, so [`flow_svg`] draws one from its primitives (rectangles
//! for nodes, polygons for the bands between them).

use clickpath_core::analytics::{Factor, Flow, FunnelCounts};
use clickpath_schema::EventType;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;

const FONT: &str = "sans-serif";
const BLUE: RGBColor = RGBColor(0x3b, 0x6e, 0xc4);
const GREEN: RGBColor = RGBColor(0x2e, 0x9e, 0x5b);
const RED: RGBColor = RGBColor(0xd0, 0x4a, 0x3c);

/// A colour per event type (Tableau 10).
fn colour(t: EventType) -> RGBColor {
    const P: [RGBColor; 10] = [
        RGBColor(0x4e, 0x79, 0xa7),
        RGBColor(0xf2, 0x8e, 0x2b),
        RGBColor(0xe1, 0x57, 0x59),
        RGBColor(0x76, 0xb7, 0xb2),
        RGBColor(0x59, 0xa1, 0x4f),
        RGBColor(0xed, 0xc9, 0x48),
        RGBColor(0xb0, 0x7a, 0xa1),
        RGBColor(0xff, 0x9d, 0xa7),
        RGBColor(0x9c, 0x75, 0x5f),
        RGBColor(0xba, 0xb0, 0xac),
    ];
    P[t.index() % P.len()]
}

fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// Bars of the units reaching each step, labelled with the share of the first step.
pub fn funnel_svg(steps: &[String], c: &FunnelCounts) -> anyhow::Result<String> {
    let n = steps.len() as u32;
    let top = c.uniques.first().copied().unwrap_or(0).max(1);
    svg((760, 360), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Units reaching each step", (FONT, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), 0u64..top + top / 8 + 1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(steps.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => steps.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc("units")
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(BLUE.filled())
                .margin(18)
                .data((0..n).zip(c.uniques.iter().copied())),
        )?;
        chart.draw_series((0..n).zip(c.uniques.iter()).map(|(i, &u)| {
            Text::new(
                format!("{u} ({:.1} %)", 100.0 * u as f64 / top as f64),
                (SegmentValue::CenterOf(i), u + top / 40),
                (FONT, 13).into_font(),
            )
        }))?;
        Ok(())
    })
}

/// The histogram bins of [`time_to_convert_svg`]: upper bounds (ms) and labels.
pub const CONVERT_BINS: [(i64, &str); 8] = [
    (60_000, "< 1 min"),
    (5 * 60_000, "1-5 min"),
    (15 * 60_000, "5-15 min"),
    (60 * 60_000, "15-60 min"),
    (6 * 3_600_000, "1-6 h"),
    (24 * 3_600_000, "6-24 h"),
    (7 * 86_400_000, "1-7 d"),
    (i64::MAX, "> 7 d"),
];

/// Counts of `durations` per [`CONVERT_BINS`] bin.
pub fn convert_histogram(durations: &[i64]) -> Vec<u64> {
    let mut counts = vec![0u64; CONVERT_BINS.len()];
    for &d in durations {
        let i = CONVERT_BINS
            .iter()
            .position(|(upper, _)| d < *upper)
            .unwrap_or(CONVERT_BINS.len() - 1);
        counts[i] += 1;
    }
    counts
}

/// Distribution of the time from the first to the last step of converted units.
pub fn time_to_convert_svg(durations: &[i64]) -> anyhow::Result<String> {
    let counts = convert_histogram(durations);
    let n = counts.len() as u32;
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    svg((760, 320), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Time to convert (converted units)", (FONT, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d((0..n).into_segmented(), 0u64..top + top / 8 + 1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(counts.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => CONVERT_BINS
                    .get(*i as usize)
                    .map(|b| b.1.to_string())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc("units")
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(GREEN.filled())
                .margin(8)
                .data((0..n).zip(counts.iter().copied())),
        )?;
        Ok(())
    })
}

/// Decision factors as horizontal bars of log2(odds ratio) with their confidence intervals.
pub fn factors_svg(factors: &[Factor]) -> anyhow::Result<String> {
    let k = factors.len().max(1) as u32;
    let l2 = |x: f64| x.log2().clamp(-8.0, 8.0);
    let lo = factors.iter().map(|f| l2(f.ci_low)).fold(-1.0, f64::min);
    let hi = factors.iter().map(|f| l2(f.ci_high)).fold(1.0, f64::max);
    let height = 80 + 26 * k;
    svg((760, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Decision factors: log2 odds ratio of converting (95 % CI)",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(220)
            .build_cartesian_2d(lo - 0.25..hi + 0.25, (0..k).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(factors.len().max(1))
            .y_label_formatter(&|v| match v {
                // Plotters may ask for a label past the last row; it gets none.
                SegmentValue::CenterOf(i) if *i < k => factors
                    .get((k - 1 - *i) as usize)
                    .map(|f| f.name.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("log2 odds ratio (0 = no association)")
            .draw()?;
        chart.draw_series(factors.iter().enumerate().map(|(i, f)| {
            let v = l2(f.odds_ratio);
            let c = if v >= 0.0 { GREEN } else { RED };
            let i = k - 1 - i as u32;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (v, SegmentValue::Exact(i + 1)),
                ],
                c.mix(if f.significant() { 0.85 } else { 0.35 }).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))?;
        chart.draw_series(factors.iter().enumerate().map(|(i, f)| {
            let y = SegmentValue::CenterOf(k - 1 - i as u32);
            PathElement::new(
                vec![(l2(f.ci_low), y.clone()), (l2(f.ci_high), y)],
                BLACK.stroke_width(2),
            )
        }))?;
        Ok(())
    })
}

/// The scorer's aggregated decision factors: mean signed contribution to the purchase log-odds.
pub fn attributions_svg(attr: &[super::extras::Attribution]) -> anyhow::Result<String> {
    let k = attr.len().max(1) as u32;
    let lo = attr.iter().map(|a| a.mean).fold(-0.1, f64::min);
    let hi = attr.iter().map(|a| a.mean).fold(0.1, f64::max);
    let height = 80 + 26 * k;
    svg((760, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Model attributions: mean contribution to purchase log-odds",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(220)
            .build_cartesian_2d(lo * 1.1..hi * 1.1, (0..k).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(attr.len().max(1))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if *i < k => attr
                    .get((k - 1 - *i) as usize)
                    .map(|a| format!("{} (n={})", a.name, a.count))
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("log-odds")
            .draw()?;
        chart.draw_series(attr.iter().enumerate().map(|(i, a)| {
            let c = if a.mean >= 0.0 { GREEN } else { RED };
            let i = k - 1 - i as u32;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (a.mean, SegmentValue::Exact(i + 1)),
                ],
                c.mix(0.8).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))?;
        Ok(())
    })
}

/// A Sankey diagram of the first `depths` positions of the units' paths.
pub fn flow_svg(flows: &[Flow], depths: usize) -> anyhow::Result<String> {
    let (w, h) = (960i32, 460i32);
    let (left, right, top, bottom, node_w, gap) = (20, 150, 40, 20, 14, 10);
    // Node value: the units at (depth, type), i.e. every flow leaving it (path ends included).
    let mut nodes: BTreeMap<(usize, EventType), u64> = BTreeMap::new();
    for f in flows.iter().filter(|f| f.depth < depths) {
        *nodes.entry((f.depth, f.from)).or_default() += f.units;
    }
    let columns = nodes.keys().map(|k| k.0 + 1).max().unwrap_or(1);
    let column_total = |d: usize| {
        nodes
            .iter()
            .filter(|(k, _)| k.0 == d)
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    let max_total = (0..columns).map(column_total).max().unwrap_or(1).max(1);
    let max_nodes = (0..columns)
        .map(|d| nodes.keys().filter(|k| k.0 == d).count())
        .max()
        .unwrap_or(1) as i32;
    let scale = f64::from(h - top - bottom - gap * max_nodes.max(1)) / max_total as f64;
    let col_x = |d: usize| {
        left + (d as i32) * ((w - left - right - node_w) / (columns.max(2) as i32 - 1).max(1))
    };
    let px = |units: u64| ((units as f64) * scale).round() as i32;
    // Top y of each node, stacked per column in event-type order.
    let mut node_y: BTreeMap<(usize, EventType), i32> = BTreeMap::new();
    for d in 0..columns {
        let mut y = top;
        for (k, v) in nodes.iter().filter(|(k, _)| k.0 == d) {
            node_y.insert(*k, y);
            y += px(*v).max(1) + gap;
        }
    }
    svg((w as u32, h as u32), |root| {
        root.draw(&Text::new(
            "Paths: units moving between event types, step by step (band width = units)",
            (left, 10),
            (FONT, 17).into_font(),
        ))?;
        let mut out_off: BTreeMap<(usize, EventType), i32> = BTreeMap::new();
        let mut in_off: BTreeMap<(usize, EventType), i32> = BTreeMap::new();
        for f in flows.iter().filter(|f| f.depth + 1 < depths) {
            let Some(to) = f.to else { continue };
            let (Some(&sy), Some(&ty)) = (
                node_y.get(&(f.depth, f.from)),
                node_y.get(&(f.depth + 1, to)),
            ) else {
                continue;
            };
            let thick = px(f.units).max(1);
            let so = out_off.entry((f.depth, f.from)).or_default();
            let to_off = in_off.entry((f.depth + 1, to)).or_default();
            let (y0, y1) = (sy + *so, ty + *to_off);
            *so += px(f.units);
            *to_off += px(f.units);
            let (x0, x1) = (col_x(f.depth) + node_w, col_x(f.depth + 1));
            // The band's two edges are cubic curves with horizontal tangents, sampled.
            let curve = |ya: i32, yb: i32| -> Vec<(i32, i32)> {
                (0..=16)
                    .map(|s| {
                        let t = f64::from(s) / 16.0;
                        let e = t * t * (3.0 - 2.0 * t);
                        let x = f64::from(x0) + t * f64::from(x1 - x0);
                        let y = f64::from(ya) + e * f64::from(yb - ya);
                        (x.round() as i32, y.round() as i32)
                    })
                    .collect()
            };
            let mut pts = curve(y0, y1);
            pts.extend(curve(y0 + thick, y1 + thick).into_iter().rev());
            root.draw(&Polygon::new(pts, colour(f.from).mix(0.35).filled()))?;
        }
        for ((d, t), v) in &nodes {
            let y = node_y[&(*d, *t)];
            let x = col_x(*d);
            root.draw(&Rectangle::new(
                [(x, y), (x + node_w, y + px(*v).max(1))],
                colour(*t).filled(),
            ))?;
            if px(*v) >= 10 {
                root.draw(&Text::new(
                    format!("{} {v}", t.as_str().to_lowercase().replace('_', " ")),
                    (x + node_w + 4, y + px(*v) / 2 - 6),
                    (FONT, 11).into_font(),
                ))?;
            }
        }
        Ok(())
    })
}

/// Small multiples are not needed: the segment tables carry the numbers. This returns the
/// conversion rate per value of one segment as bars (kept for the report's segment section).
pub fn segment_svg(title: &str, values: &[(String, FunnelCounts)]) -> anyhow::Result<String> {
    let k = values.len().max(1) as u32;
    let height = 80 + 24 * k;
    let max = values
        .iter()
        .map(|(_, c)| c.conversion_rate())
        .fold(0.0, f64::max)
        .max(0.01);
    svg((760, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(160)
            .build_cartesian_2d(0.0..max * 110.0, (0..k).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(values.len().max(1))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => values
                    .get(*i as usize)
                    .map(|(n, c)| format!("{n} ({})", c.uniques.first().copied().unwrap_or(0)))
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("conversion rate (%)")
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, (_, c))| {
            let i = i as u32;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (100.0 * c.conversion_rate(), SegmentValue::Exact(i + 1)),
                ],
                BLUE.mix(0.8).filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))?;
        Ok(())
    })
}

/// ROC curve (with the chance diagonal) and reliability diagram side by side.
pub fn model_svg(
    roc: &[(f64, f64)],
    auc: f64,
    calib: &[(f64, f64, u64)],
) -> anyhow::Result<String> {
    svg((900, 400), |root| {
        let (l, r) = root.split_horizontally(450);
        let mut chart = ChartBuilder::on(&l)
            .caption(format!("ROC (AUC {auc:.3})"), (FONT, 16))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .draw()?;
        chart.draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.3),
        ))?;
        chart.draw_series(LineSeries::new(roc.iter().copied(), BLUE.stroke_width(2)))?;
        let mut chart = ChartBuilder::on(&r)
            .caption("Calibration", (FONT, 16))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("mean predicted probability")
            .y_desc("observed rate")
            .draw()?;
        chart.draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.3),
        ))?;
        chart.draw_series(LineSeries::new(
            calib.iter().map(|c| (c.0, c.1)),
            GREEN.stroke_width(2),
        ))?;
        chart.draw_series(
            calib
                .iter()
                .map(|c| Circle::new((c.0, c.1), 4, GREEN.filled())),
        )?;
        Ok(())
    })
}

/// Alerts over time: one row per alert type, one dot per alert at its first evidence event,
/// red for high severity, orange for medium, grey for low.
pub fn alerts_svg(points: &[(i64, String, String)]) -> anyhow::Result<String> {
    let mut types: Vec<&str> = points.iter().map(|p| p.1.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    let k = types.len().max(1) as u32;
    let t0 = points.iter().map(|p| p.0).min().unwrap_or(0);
    let hours = |t: i64| (t - t0) as f64 / 3_600_000.0;
    let span = points.iter().map(|p| hours(p.0)).fold(1.0, f64::max);
    svg((900, 90 + 34 * k), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Alert timeline", (FONT, 16))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..span * 1.02, (0..k).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(types.len().max(1))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => types
                    .get(*i as usize)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("hours since the first alert")
            .draw()?;
        chart.draw_series(points.iter().map(|(t, ty, sev)| {
            let row = types.iter().position(|x| x == ty).unwrap_or(0) as u32;
            let c = match sev.as_str() {
                "HIGH" | "CRITICAL" => RED,
                "MEDIUM" => RGBColor(0xf2, 0x8e, 0x2b),
                _ => RGBColor(0x88, 0x88, 0x88),
            };
            Circle::new(
                (hours(*t), SegmentValue::CenterOf(row)),
                5,
                c.mix(0.8).filled(),
            )
        }))?;
        Ok(())
    })
}
