//! The report page: tables and the charts of [`super::charts`] in one HTML document.

use super::charts;
use super::extras::{self, Extras};
use clickpath_core::analytics::{Analysis, FunnelCounts, FunnelReport, PathCount};
use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration in the largest unit that keeps it readable (`42 s`, `3.5 min`, `2.0 h`, `1.5 d`).
pub fn duration(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 86_400.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1000px;color:#222}\
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}\
td:first-child,th:first-child{text-align:left}figure.chart{margin:8px 0}figure.chart svg{max-width:100%;height:auto}\
.cols{display:flex;gap:24px}.cols>div{flex:1}.note{color:#666;font-size:13px}";

/// Collects errors raised by any script on the page, for the render check below.
const HEAD_SCRIPT: &str = "window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message));});";

/// Writes a `#render-check` marker: how many charts there are, how many drew an SVG with a
/// non-zero size and shapes in it, which did not, and how many script errors occurred.
const CHECK_SCRIPT: &str = "(function(){var figs=document.querySelectorAll('figure.chart');var ok=0,bad=[];\
figs.forEach(function(f){var s=f.querySelector('svg');var r=s?s.getBoundingClientRect():null;\
if(r&&r.width>0&&r.height>0&&s.querySelectorAll('rect,polygon,polyline,path,line').length>0){ok++;}else{bad.push(f.id);}});\
var m=document.createElement('div');m.id='render-check';m.setAttribute('data-charts',figs.length);\
m.setAttribute('data-rendered',ok);m.setAttribute('data-missing',bad.join(' '));\
m.setAttribute('data-errors',window.__errors.length);m.textContent='charts rendered: '+ok+' of '+figs.length;\
m.className='note';document.body.appendChild(m);})();";

fn figure(out: &mut String, id: &str, svg: &str) {
    let _ = write!(out, "<figure class=\"chart\" id=\"{id}\">{svg}</figure>");
}

fn pct(num: u64, den: u64) -> String {
    if den == 0 {
        "-".into()
    } else {
        format!("{:.1} %", 100.0 * num as f64 / den as f64)
    }
}

fn funnel_table(out: &mut String, steps: &[String], c: &FunnelCounts) {
    out.push_str("<table><tr><th>step</th><th>uniques</th><th>of first</th><th>of previous</th><th>drop-off</th><th>totals</th><th>median to next</th><th>p90 to next</th></tr>");
    for (k, name) in steps.iter().enumerate() {
        let prev = if k == 0 {
            c.uniques[0]
        } else {
            c.uniques[k - 1]
        };
        let t = c.step_timings.get(k);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            c.uniques[k],
            pct(c.uniques[k], c.uniques[0]),
            pct(c.uniques[k], prev),
            c.drop_off.get(k).map(|d| d.to_string()).unwrap_or_default(),
            c.totals[k],
            t.and_then(|t| t.median_ms)
                .map(duration)
                .unwrap_or_default(),
            t.and_then(|t| t.p90_ms).map(duration).unwrap_or_default(),
        );
    }
    out.push_str("</table>");
}

fn path_table(out: &mut String, title: &str, paths: &[PathCount], total: u64) {
    let _ = write!(
        out,
        "<div><h3>{}</h3><table><tr><th>path</th><th>units</th><th>share</th></tr>",
        escape(title)
    );
    for p in paths {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.path.label()),
            p.units,
            pct(p.units, total)
        );
    }
    out.push_str("</table></div>");
}

/// The whole report page for `analysis` of the events in `source`.
pub fn render_html(a: &Analysis, source: &str, extra: &Extras) -> anyhow::Result<String> {
    let f = &a.funnel;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>clickpath report</title>\
         <style>{STYLE}</style><script>{HEAD_SCRIPT}</script></head><body><h1>clickpath report</h1>\
         <p class=\"note\">{} — {} events, {} units ({:?}); funnel {:?}, conversion window {}, steps {}.</p>",
        escape(source),
        a.events,
        a.units,
        f.unit,
        f.order,
        duration(f.window_ms),
        escape(&f.steps.join(" → ")),
    );

    funnel_section(&mut out, f)?;
    paths_section(&mut out, a)?;
    time_to_convert_section(&mut out, f)?;
    factors_section(&mut out, a)?;
    segments_section(&mut out, f)?;
    over_time_section(&mut out, f)?;
    extras_sections(&mut out, extra)?;
    let _ = write!(out, "<script>{CHECK_SCRIPT}</script></body></html>");
    Ok(out)
}

/// The funnel chart, its table and the conversion rate.
fn funnel_section(out: &mut String, f: &FunnelReport) -> anyhow::Result<()> {
    let c = &f.overall;
    out.push_str("<h2>Funnel</h2>");
    figure(out, "chart-funnel", &charts::funnel_svg(&f.steps, c)?);
    funnel_table(out, &f.steps, c);
    let _ = write!(
        out,
        "<p class=\"note\">Conversion {:.2} %. Uniques count units by the furthest step of their best attempt; totals count attempts (see docs/analytics.md).</p>",
        100.0 * c.conversion_rate()
    );
    Ok(())
}

/// The path flow (Sankey) and the top converted and dropped paths.
fn paths_section(out: &mut String, a: &Analysis) -> anyhow::Result<()> {
    out.push_str("<h2>Paths</h2>");
    figure(out, "chart-flow", &charts::flow_svg(&a.paths.flows, 5)?);
    let dropped = a.paths.units - a.paths.converted;
    let _ = write!(
        out,
        "<p class=\"note\">{} distinct paths (consecutive repeats compressed) over {} units; {} converted.</p><div class=\"cols\">",
        a.paths.distinct_paths, a.paths.units, a.paths.converted
    );
    path_table(out, "Converted", &a.paths.top_converted, a.paths.converted);
    path_table(out, "Dropped", &a.paths.top_dropped, dropped);
    out.push_str("</div>");
    Ok(())
}

/// The distribution of time to convert.
fn time_to_convert_section(out: &mut String, f: &FunnelReport) -> anyhow::Result<()> {
    let c = &f.overall;
    out.push_str("<h2>Time to convert</h2>");
    figure(
        out,
        "chart-time-to-convert",
        &charts::time_to_convert_svg(&f.time_to_convert_ms)?,
    );
    let _ = write!(
        out,
        "<p class=\"note\">{} converted units; median {}, p90 {}.</p>",
        c.time_to_convert.count,
        c.time_to_convert
            .median_ms
            .map(duration)
            .unwrap_or("-".into()),
        c.time_to_convert.p90_ms.map(duration).unwrap_or("-".into()),
    );
    Ok(())
}

/// Decision factors: chart and table.
fn factors_section(out: &mut String, a: &Analysis) -> anyhow::Result<()> {
    out.push_str("<h2>Decision factors</h2>");
    if a.factors.is_empty() {
        out.push_str("<p class=\"note\">No event or property reaches the minimum support.</p>");
    } else {
        figure(out, "chart-factors", &charts::factors_svg(&a.factors)?);
        out.push_str("<table><tr><th>factor</th><th>converted with</th><th>dropped with</th><th>odds ratio</th><th>95 % CI</th><th>lift</th></tr>");
        for x in &a.factors {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2} – {:.2}</td><td>{:.2}</td></tr>",
                escape(&x.name),
                x.converted_with,
                x.dropped_with,
                x.odds_ratio,
                x.ci_low,
                x.ci_high,
                x.lift
            );
        }
        out.push_str("</table>");
    }
    Ok(())
}

/// Conversion by segment, one chart per segment with two values or more.
fn segments_section(out: &mut String, f: &FunnelReport) -> anyhow::Result<()> {
    out.push_str("<h2>Segments</h2>");
    for seg in &f.segments {
        if seg.values.len() < 2 {
            let _ = write!(
                out,
                "<p class=\"note\">{}: one value only ({}).</p>",
                seg.segment.name(),
                escape(seg.values.first().map(|v| v.0.as_str()).unwrap_or("-"))
            );
            continue;
        }
        let mut values = seg.values.clone();
        values.sort_by(|x, y| y.1.uniques[0].cmp(&x.1.uniques[0]));
        values.truncate(12);
        figure(
            out,
            &format!("chart-segment-{}", seg.segment.name()),
            &charts::segment_svg(&format!("Conversion by {}", seg.segment.name()), &values)?,
        );
    }
    Ok(())
}

/// Entered and converted per time bucket (the first 60).
fn over_time_section(out: &mut String, f: &FunnelReport) -> anyhow::Result<()> {
    out.push_str("<h2>Over time</h2><table><tr><th>bucket start (UTC)</th><th>entered</th><th>converted</th><th>rate</th></tr>");
    for b in f.buckets.iter().take(60) {
        let n = b.counts.uniques.len();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            utc(b.start_ms),
            b.counts.uniques[0],
            b.counts.uniques[n - 1],
            pct(b.counts.uniques[n - 1], b.counts.uniques[0])
        );
    }
    out.push_str("</table>");
    Ok(())
}

/// The outlook model's segments over the report's sessions, as a table.
fn outlook_section(out: &mut String, o: &extras::OutlookSection) {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    let _ = write!(
        out,
        "<h2>Return and segments</h2><p class=\"note\">{} closed sessions assessed by {} (return within \
         {} h: ROC AUC {} on its test split; segment stability across a refit, adjusted Rand index {}).</p>\
         <table><tr><th>segment</th><th>sessions</th><th>share</th><th>mean return probability</th>\
         <th>description</th></tr>",
        o.sessions,
        escape(&o.version),
        o.horizon_hours,
        f(o.test_roc_auc),
        f(o.stability_ari)
    );
    for r in &o.segments {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1} %</td><td>{:.3}</td><td>{}</td></tr>",
            r.segment,
            r.sessions,
            100.0 * r.share,
            r.mean_return_probability,
            escape(&r.description)
        );
    }
    out.push_str("</table>");
}

/// The model's ROC and calibration, its attributions, and the alert timeline, when given.
fn extras_sections(out: &mut String, extra: &Extras) -> anyhow::Result<()> {
    if let Some(scores) = &extra.scores {
        out.push_str("<h2>Model</h2>");
        let roc = extras::roc_points(scores);
        let auc = extras::auc(&roc);
        let calib = extras::calibration_bins(scores, 10);
        figure(out, "chart-model", &charts::model_svg(&roc, auc, &calib)?);
        let _ = write!(
            out,
            "<p class=\"note\">{} scored predictions, {} positive; ROC AUC {auc:.3}.</p>",
            scores.len(),
            scores.iter().filter(|s| s.label).count()
        );
    }
    if let Some(attr) = &extra.attributions {
        out.push_str("<h2>Model attributions</h2>");
        if attr.is_empty() {
            out.push_str("<p class=\"note\">No prediction carried decision factors.</p>");
        } else {
            figure(out, "chart-attributions", &charts::attributions_svg(attr)?);
            out.push_str(
                "<p class=\"note\">Mean change of the purchase log-odds when the input is blanked \
                 (occlusion), over the predictions that listed it among their top factors.</p>",
            );
        }
    }
    if let Some(o) = &extra.outlook {
        outlook_section(out, o);
    }
    if let Some(alerts) = &extra.alerts {
        out.push_str("<h2>Alerts</h2>");
        // The enums' JSON names are their Avro symbols; new alert types need no change here.
        let name = |v: serde_json::Result<serde_json::Value>| match v {
            Ok(serde_json::Value::String(s)) => s,
            _ => "?".to_string(),
        };
        let points: Vec<(i64, String, String)> = alerts
            .iter()
            .map(|a| {
                (
                    a.window_start,
                    name(serde_json::to_value(a.alert_type)),
                    name(serde_json::to_value(a.severity)),
                )
            })
            .collect();
        if points.is_empty() {
            out.push_str("<p class=\"note\">No alerts.</p>");
        } else {
            figure(out, "chart-alerts", &charts::alerts_svg(&points)?);
            let _ = write!(out, "<p class=\"note\">{} alerts.</p>", points.len());
        }
    }
    Ok(())
}

/// The report page for funnel aggregates read from the analytics topic: the funnel over every
/// bucket, conversion by segment and a table per bucket. (Paths, factors and the time-to-convert
/// distribution need the events themselves: report from the clean topic or a file for those.)
pub fn render_aggregates_html(
    m: &super::topic::MergedAggregates,
    source: &str,
) -> anyhow::Result<String> {
    let c = m.overall();
    let buckets: Vec<&super::topic::MergedRow> =
        m.rows.iter().filter(|r| r.segment == "all").collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>clickpath report</title>\
         <style>{STYLE}</style><script>{HEAD_SCRIPT}</script></head><body><h1>clickpath report</h1>\
         <p class=\"note\">{} — funnel aggregates of {} bucket(s) of {} from the analytics stage; funnel {}, \
         conversion window {}, steps {}.</p>",
        escape(source),
        buckets.len(),
        duration(m.bucket_ms),
        escape(&m.funnel_order),
        duration(m.window_ms),
        escape(&m.steps.join(" → ")),
    );
    out.push_str("<h2>Funnel</h2>");
    figure(&mut out, "chart-funnel", &charts::funnel_svg(&m.steps, &c)?);
    funnel_table(&mut out, &m.steps, &c);
    let _ = write!(
        out,
        "<p class=\"note\">Conversion {:.2} %. Summed over buckets: a unit counts once in every bucket where \
         one of its attempts starts. Rows of several partitions are added; medians and p90s are \
         shown only where one partition counted a bucket (see docs/analytics.md).</p>",
        100.0 * c.conversion_rate()
    );
    out.push_str("<h2>Segments</h2>");
    for (segment, values) in m.segments() {
        if values.len() < 2 {
            let _ = write!(
                out,
                "<p class=\"note\">{}: one value only ({}).</p>",
                escape(&segment),
                escape(values.first().map(|v| v.0.as_str()).unwrap_or("-"))
            );
            continue;
        }
        let mut values = values;
        values.sort_by(|x, y| y.1.uniques[0].cmp(&x.1.uniques[0]));
        values.truncate(12);
        figure(
            &mut out,
            &format!("chart-segment-{}", escape(&segment)),
            &charts::segment_svg(&format!("Conversion by {segment}"), &values)?,
        );
    }
    out.push_str("<h2>Over time</h2><table><tr><th>bucket start (UTC)</th><th>partitions</th><th>entered</th><th>converted</th><th>rate</th><th>median to convert</th></tr>");
    for b in buckets.iter().rev().take(200).rev() {
        let u = &b.counts.uniques;
        let n = u.len();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            utc(b.bucket_start),
            b.parts,
            u[0],
            u[n - 1],
            pct(u[n - 1], u[0]),
            b.counts
                .time_to_convert
                .median_ms
                .map(duration)
                .unwrap_or_default()
        );
    }
    out.push_str("</table>");
    let _ = write!(out, "<script>{CHECK_SCRIPT}</script></body></html>");
    Ok(out)
}

/// `YYYY-MM-DD HH:MM` of a Unix time in ms (civil-from-days, H. Hinnant's algorithm).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = clickpath_core::time::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_escapes() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_569_888_000_000 + 3_660_000), "2019-10-01 01:01");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00");
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        assert_eq!(duration(42_000), "42 s");
        assert_eq!(duration(90 * 60_000), "1.5 h");
    }
}
