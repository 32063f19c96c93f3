//! The DET curve and the score histogram, as PNG and SVG, labelled for non-specialists.
use std::path::{Path, PathBuf};

use plotters::{coord::Shift, prelude::*};

use super::stats::{Scores, Summary};

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {}: {message}", path.display())]
pub struct PlotError {
    path: PathBuf,
    message: String,
}

const SIZE: (u32, u32) = (960, 640);
const GENUINE: RGBColor = RGBColor(0, 114, 178);
const IMPOSTOR: RGBColor = RGBColor(213, 94, 0);

/// Makes the DejaVu Sans font (compiled in) the one plots use, so PNG text renders anywhere.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans font parses"));
    });
}

/// A share as a percentage with as many decimals as it needs: 12%, 1.5%, 0.07%.
fn percent(share: f64) -> String {
    let p = share * 100.0;
    match p {
        p if p >= 10.0 => format!("{p:.0}%"),
        p if p >= 1.0 => format!("{p:.1}%"),
        p if p >= 0.1 => format!("{p:.2}%"),
        p => format!("{p:.3}%"),
    }
}

/// 1e-4 as "10,000".
fn one_in(rate: f64) -> String {
    let n = (1.0 / rate).round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A figure that can draw itself on any backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Writes `stem.png` and `stem.svg` of `figure`.
fn both(dir: &Path, stem: &str, figure: &impl Figure) -> Result<Vec<PathBuf>, PlotError> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let fail = |path: &Path, message: String| PlotError { path: path.to_path_buf(), message };
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        figure.draw(&root).map_err(|m| fail(&png, m))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        figure.draw(&root).map_err(|m| fail(&svg, m))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    Ok(vec![png, svg])
}

/// The DET curve: how many strangers are wrongly matched (x) against how many true matches are
/// missed (y), as the threshold moves; both axes logarithmic, operating points marked.
pub fn det(dir: &Path, scores: &Scores, summary: &Summary) -> Result<Vec<PathBuf>, PlotError> {
    let curve = scores.det_curve();
    struct Det<'a> {
        curve: &'a [(f64, f64)],
        summary: &'a Summary,
    }
    impl Figure for Det<'_> {
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
            let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
            root.fill(&WHITE).map_err(e)?;
            let min_fnmr = self.curve.iter().map(|p| p.1).filter(|&y| y > 0.0).fold(1.0, f64::min).max(1e-4);
            let mut chart = ChartBuilder::on(root)
                .caption("Wrong matches vs. missed matches as the threshold moves (DET curve)", ("sans-serif", 24))
                .margin(20)
                .x_label_area_size(60)
                .y_label_area_size(80)
                .build_cartesian_2d((1e-7f64..1.0).log_scale(), (min_fnmr / 2.0..1.0f64).log_scale())
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("False match rate: share of strangers wrongly matched")
                .y_desc("False non-match rate: share of true matches missed")
                .x_label_formatter(&|x| format!("{x:.0e}"))
                .y_label_formatter(&|y| percent(*y))
                .axis_desc_style(("sans-serif", 18))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(e)?;
            let points = self.curve.iter().copied().filter(|&(x, y)| x > 0.0 && y > 0.0);
            chart
                .draw_series(LineSeries::new(points, GENUINE.stroke_width(3)))
                .map_err(e)?
                .label("synthetic population")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GENUINE.stroke_width(3)));
            for p in &self.summary.operating_points {
                let (Some(t), Some(fnmr)) = (p.threshold, p.fnmr) else { continue };
                let at = (p.fmr, fnmr.max(min_fnmr / 2.0));
                chart.draw_series(std::iter::once(Circle::new(at, 6, IMPOSTOR.filled()))).map_err(e)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("threshold {t:.2}: {} missed", percent(fnmr)),
                        (p.fmr * 1.3, at.1 * 1.08),
                        ("sans-serif", 14),
                    )))
                    .map_err(e)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.9))
                .label_font(("sans-serif", 15))
                .draw()
                .map_err(e)?;
            Ok(())
        }
    }
    let det = Det { curve: &curve, summary };
    both(dir, "det", &det)
}

/// Genuine and impostor score histograms with the thresholds at FMR 1e-2, 1e-4 and 1e-6.
pub fn histogram(dir: &Path, scores: &Scores, summary: &Summary) -> Result<Vec<PathBuf>, PlotError> {
    const BINS: usize = 100;
    let bin = |x: f32| (((x + 0.25) / 1.25 * BINS as f32).floor() as isize).clamp(0, BINS as isize - 1) as usize;
    let density = |xs: &[f32]| {
        let mut counts = vec![0f64; BINS];
        for &x in xs {
            counts[bin(x)] += 1.0;
        }
        let total = xs.len().max(1) as f64;
        counts.into_iter().map(move |c| c / total).collect::<Vec<_>>()
    };
    let genuine = density(&scores.genuine);
    let impostor = density(&scores.impostor);
    let top = genuine.iter().chain(&impostor).fold(0.0f64, |a, &b| a.max(b)) * 1.1;
    let centre = |i: usize| -0.25 + (i as f64 + 0.5) * 1.25 / BINS as f64;
    struct Hist<'a> {
        genuine: &'a [f64],
        impostor: &'a [f64],
        top: f64,
        summary: &'a Summary,
        centre: &'a dyn Fn(usize) -> f64,
    }
    impl Figure for Hist<'_> {
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
            let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
            root.fill(&WHITE).map_err(e)?;
            let mut chart = ChartBuilder::on(root)
                .caption("Similarity scores: same person vs. strangers", ("sans-serif", 24))
                .margin(20)
                .x_label_area_size(60)
                .y_label_area_size(80)
                .build_cartesian_2d(-0.25f64..1.0, 0.0..self.top)
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("Cosine similarity between two face templates")
                .y_desc("Share of pairs")
                .axis_desc_style(("sans-serif", 18))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(e)?;
            for (values, color, label) in
                [(self.impostor, IMPOSTOR, "two different people"), (self.genuine, GENUINE, "same person")]
            {
                let line = values.iter().enumerate().map(|(i, &v)| ((self.centre)(i), v));
                chart
                    .draw_series(AreaSeries::new(line, 0.0, color.mix(0.25)).border_style(color.stroke_width(2)))
                    .map_err(e)?
                    .label(label)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], color.filled()));
            }
            for p in self.summary.operating_points.iter().filter(|p| [1e-2, 1e-4, 1e-6].contains(&p.fmr)) {
                let Some(t) = p.threshold else { continue };
                let t = f64::from(t);
                chart
                    .draw_series(LineSeries::new([(t, 0.0), (t, self.top * 0.9)], BLACK.stroke_width(1)))
                    .map_err(e)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{t:.2}: 1 in {} strangers matched", one_in(p.fmr)),
                        (t + 0.01, self.top * (0.9 - 0.05 * p.fmr.log10().abs() / 2.0)),
                        ("sans-serif", 14),
                    )))
                    .map_err(e)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.9))
                .label_font(("sans-serif", 15))
                .draw()
                .map_err(e)?;
            Ok(())
        }
    }
    let hist = Hist { genuine: &genuine, impostor: &impostor, top, summary, centre: &centre };
    both(dir, "scores", &hist)
}
