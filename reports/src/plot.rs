//! Plots: one figure rendered to PNG and SVG bytes with the same layout.
//!
//! The font (DejaVu Sans, `reports/fonts/`, Bitstream Vera licence beside it)
//! is embedded and registered with plotters' `ab_glyph` text backend, so
//! figures render on a machine with no fonts installed, and the same figure
//! gives the same bytes everywhere.
//!
//! Two levels:
//! - [`Figure`]: anything that draws itself on a plotters drawing area of any
//!   backend. [`render`] draws it twice (bitmap and SVG) and returns the
//!   bytes of `NAME.png` and `NAME.svg`; the caller writes them.
//! - [`XyChart`]: a ready-made figure with linear or log axes, line / step /
//!   point series, rectangles (bars, timeline spans), text marks and a
//!   legend; timelines, stacked bars, CDFs and rooflines are all `XyChart`s.
//!   Its legend sits in a column right of the plotting area (it never covers
//!   data), its caption line under it names what the figure shows (device,
//!   topology, model, plan), and a log axis has a labelled tick at 2x and 5x
//!   of every decade and a light line at the other integers.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor};
use thiserror::Error;

/// The embedded font (DejaVu Sans 2.37; licence in `fonts/LICENSE-DejaVu.txt`).
pub const FONT_TTF: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
/// The family name every text style uses.
pub const FONT_FAMILY: &str = "sans-serif";

/// Why a figure could not be drawn.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PlotError {
    #[error("the embedded font could not be loaded")]
    Font,
    #[error("drawing {figure}: {message}")]
    Draw { figure: String, message: String },
    #[error("encoding {figure}.png: {message}")]
    Encode { figure: String, message: String },
    #[error("figure {figure}: {message}")]
    Data { figure: String, message: String },
}

/// Registers the embedded font for every style plotters may ask for (once
/// per process).
pub fn ensure_font() -> Result<(), PlotError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = DONE.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic, FontStyle::Oblique]
            .into_iter()
            .all(|style| plotters::style::register_font(FONT_FAMILY, style, FONT_TTF).is_ok())
    });
    if *ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// A colour-blind-safe palette (Okabe and Ito, "Color Universal Design",
/// 2008), black last.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(240, 228, 66),  // yellow
    RGBColor(0, 0, 0),       // black
];

/// The `i`-th palette colour (cycling).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Anything that can draw itself on a drawing area of any backend.
pub trait Figure {
    /// File stem (`NAME.png`, `NAME.svg`).
    fn name(&self) -> &str;
    /// Pixel size (PNG) and user units (SVG).
    fn size(&self) -> (u32, u32) {
        (960, 600)
    }
    /// Draws the figure on `root` (already cleared to white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
}

/// A rendered figure: the bytes of `NAME.png` and `NAME.svg`.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedFigure {
    pub name: String,
    pub png: Vec<u8>,
    pub svg: Vec<u8>,
}

impl RenderedFigure {
    pub fn png_name(&self) -> String {
        format!("{}.png", self.name)
    }
    pub fn svg_name(&self) -> String {
        format!("{}.svg", self.name)
    }
}

fn draw_err<E: std::fmt::Debug>(figure: &str) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw { figure: figure.to_owned(), message: format!("{e:?}") }
}

/// Draws `fig` as PNG and SVG.
pub fn render(fig: &impl Figure) -> Result<RenderedFigure, PlotError> {
    ensure_font()?;
    let (w, h) = fig.size();
    let name = fig.name().to_owned();
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(&name))?;
        fig.draw(&root)?;
        root.present().map_err(draw_err(&name))?;
    }
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&rgb, w, h, image::ColorType::Rgb8)
            .map_err(|e| PlotError::Encode { figure: name.clone(), message: e.to_string() })?;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(&name))?;
        fig.draw(&root)?;
        root.present().map_err(draw_err(&name))?;
    }
    Ok(RenderedFigure { name, png, svg: svg.into_bytes() })
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; every value must be positive.
    Log10,
}

/// One axis: its label (with unit), scale and optional fixed range.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    /// `(min, max)` in data units; `None` fits the data.
    pub range: Option<(f64, f64)>,
    /// Category names drawn at 0, 1, 2, ... instead of numbers (timeline
    /// rows, bar groups).
    pub categories: Vec<String>,
}

impl Axis {
    pub fn linear(label: impl Into<String>) -> Axis {
        Axis { label: label.into(), scale: Scale::Linear, range: None, categories: Vec::new() }
    }
    pub fn log(label: impl Into<String>) -> Axis {
        Axis { label: label.into(), scale: Scale::Log10, range: None, categories: Vec::new() }
    }
    pub fn with_range(mut self, min: f64, max: f64) -> Axis {
        self.range = Some((min, max));
        self
    }
    pub fn with_categories(mut self, names: Vec<String>) -> Axis {
        self.categories = names;
        self
    }
    fn map(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => v,
            Scale::Log10 => v.log10(),
        }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeriesStyle {
    Line {
        width: u32,
    },
    Dashed {
        width: u32,
    },
    /// Horizontal then vertical steps (CDFs).
    Step {
        width: u32,
    },
    Points {
        radius: u32,
    },
}

/// A named series of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub style: SeriesStyle,
    pub points: Vec<(f64, f64)>,
    /// Shown in the legend (false for helper lines).
    pub in_legend: bool,
}

/// A filled rectangle between two corners in data units (a bar, a span).
#[derive(Debug, Clone, PartialEq)]
pub struct RectMark {
    pub x0: f64,
    pub x1: f64,
    pub y0: f64,
    pub y1: f64,
    pub color: RGBColor,
    /// Legend entry for this colour (first rectangle with a name wins).
    pub legend: Option<String>,
}

/// A text label at a data position.
#[derive(Debug, Clone, PartialEq)]
pub struct TextMark {
    pub x: f64,
    pub y: f64,
    pub text: String,
    pub color: RGBColor,
}

/// Whether there is a legend. Every legend is drawn in a column right of
/// the plotting area, top-aligned (`Lower*`: bottom-aligned), so it never
/// covers data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegendPosition {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
    None,
}

/// A 2-D chart: axes, series, rectangles, text marks and a legend.
#[derive(Debug, Clone, PartialEq)]
pub struct XyChart {
    pub name: String,
    pub title: String,
    /// A line under the figure saying what it shows (e.g. the device,
    /// topology, model and plan); empty for none.
    pub caption: String,
    pub size: (u32, u32),
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub rects: Vec<RectMark>,
    pub texts: Vec<TextMark>,
    pub legend: LegendPosition,
}

impl XyChart {
    /// Sets the caption line (see [`XyChart::caption`]).
    pub fn with_caption(mut self, caption: impl Into<String>) -> XyChart {
        self.caption = caption.into();
        self
    }

    /// The legend's entries: each named rectangle colour and each series in
    /// the legend, in drawing order.
    fn legend_entries(&self) -> Vec<(String, RGBColor, Option<SeriesStyle>)> {
        let mut out: Vec<(String, RGBColor, Option<SeriesStyle>)> = Vec::new();
        for r in &self.rects {
            if let Some(name) = &r.legend {
                if !out.iter().any(|(n, _, _)| n == name) {
                    out.push((name.clone(), r.color, None));
                }
            }
        }
        for s in self.series.iter().filter(|s| s.in_legend) {
            out.push((s.name.clone(), s.color, Some(s.style)));
        }
        out
    }

    pub fn new(name: impl Into<String>, title: impl Into<String>, x: Axis, y: Axis) -> XyChart {
        XyChart {
            name: name.into(),
            title: title.into(),
            caption: String::new(),
            size: (960, 600),
            x,
            y,
            series: Vec::new(),
            rects: Vec::new(),
            texts: Vec::new(),
            legend: LegendPosition::UpperLeft,
        }
    }

    /// Every x and y value the chart shows, for the fitted range.
    fn extent(&self) -> Result<[(f64, f64); 2], PlotError> {
        let mut xs: Vec<f64> = Vec::new();
        let mut ys: Vec<f64> = Vec::new();
        for s in &self.series {
            for &(x, y) in &s.points {
                xs.push(x);
                ys.push(y);
            }
        }
        for r in &self.rects {
            xs.extend([r.x0, r.x1]);
            ys.extend([r.y0, r.y1]);
        }
        for t in &self.texts {
            xs.push(t.x);
            ys.push(t.y);
        }
        let bad = |message: String| PlotError::Data { figure: self.name.clone(), message };
        let fit = |axis: &Axis, vals: &[f64], which: &str| -> Result<(f64, f64), PlotError> {
            if let Some((a, b)) = axis.range {
                if !(a.is_finite() && b.is_finite() && a < b) || (axis.scale == Scale::Log10 && a <= 0.0) {
                    return Err(bad(format!("{which} axis range {a}..{b} is empty or not positive on a log scale")));
                }
                return Ok((axis.map(a), axis.map(b)));
            }
            let mut lo = f64::INFINITY;
            let mut hi = f64::NEG_INFINITY;
            for &v in vals {
                if !v.is_finite() || (axis.scale == Scale::Log10 && v <= 0.0) {
                    return Err(bad(format!("{which} value {v} cannot be drawn on a {:?} axis", axis.scale)));
                }
                let m = axis.map(v);
                lo = lo.min(m);
                hi = hi.max(m);
            }
            if !lo.is_finite() {
                return Ok((0.0, 1.0));
            }
            Ok(match axis.scale {
                Scale::Log10 => (lo.floor(), if hi.ceil() > lo.floor() { hi.ceil() } else { lo.floor() + 1.0 }),
                Scale::Linear => {
                    let pad = if hi > lo { (hi - lo) * 0.05 } else { hi.abs().max(1.0) * 0.5 };
                    (if lo >= 0.0 && lo - pad < 0.0 { 0.0 } else { lo - pad }, hi + pad)
                }
            })
        };
        Ok([fit(&self.x, &xs, "x")?, fit(&self.y, &ys, "y")?])
    }
}

/// Tick label text: `1`, `20`, `1.5k`, `3M`, `0.01`.
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e12 {
        (v / 1e12, "T")
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let mut s = if scaled == scaled.round() {
        format!("{}", scaled.round() as i64)
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else if scaled.abs() >= 0.01 || scaled == 0.0 {
        format!("{scaled:.2}")
    } else {
        format!("{scaled:.0e}")
    };
    if s.contains('.') && !s.contains('e') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{s}{suffix}")
}

fn axis_label(axis: &Axis, mapped: f64) -> String {
    if !axis.categories.is_empty() {
        let i = mapped.round();
        if (mapped - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < axis.categories.len() {
            return axis.categories[i as usize].clone();
        }
        return String::new();
    }
    match axis.scale {
        Scale::Linear => tick_label(mapped),
        Scale::Log10 => {
            let decade = mapped.floor();
            let m = 10f64.powf(mapped - decade);
            if (mapped - mapped.round()).abs() < 1e-9 {
                tick_label(10f64.powi(mapped.round() as i32))
            } else if (m - 2.0).abs() < 1e-6 || (m - 5.0).abs() < 1e-6 {
                tick_label(m.round() * 10f64.powi(decade as i32))
            } else {
                String::new()
            }
        }
    }
}

/// A linear f64 axis whose grid lines sit where [`key_points`] puts them
/// (plotters' own `WithKeyPoints` keeps the f64 axis's formatting bound,
/// which custom label formatters do not need).
struct Ticks {
    inner: plotters::coord::types::RangedCoordf64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ticks {
    fn new(range: std::ops::Range<f64>, bold: Vec<f64>, light: Vec<f64>) -> Ticks {
        Ticks { inner: range.into(), bold, light }
    }
}

impl Ranged for Ticks {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// An axis's labelled (bold) and unlabelled (light) grid positions, in
/// mapped units: the categories; on a log axis every decade, its 2x and 5x
/// labelled and its other integers light (only decades when it spans more
/// than six); on a linear axis about eight round numbers.
fn key_points(axis: &Axis, (lo, hi): (f64, f64)) -> (Vec<f64>, Vec<f64>) {
    if !axis.categories.is_empty() {
        let bold = (0..axis.categories.len()).map(|i| i as f64).filter(|&v| v >= lo && v <= hi).collect();
        return (bold, Vec::new());
    }
    let within = |v: &f64| *v >= lo - 1e-9 && *v <= hi + 1e-9;
    match axis.scale {
        Scale::Log10 => {
            let decades = hi - lo;
            let (mut bold, mut light) = (Vec::new(), Vec::new());
            let step = (decades / 12.0).ceil().max(1.0) as i32;
            for k in (lo.floor() as i32)..=(hi.ceil() as i32) {
                let d = f64::from(k);
                if k % step == 0 {
                    bold.push(d);
                }
                for m in 2..=9 {
                    let v = d + f64::from(m).log10();
                    if decades <= 6.0 && (m == 2 || m == 5) {
                        bold.push(v);
                    } else if decades <= 10.0 {
                        light.push(v);
                    }
                }
            }
            bold.retain(within);
            light.retain(within);
            (bold, light)
        }
        Scale::Linear => {
            let coord = plotters::coord::types::RangedCoordf64::from(lo..hi);
            (coord.key_points(8), coord.key_points(40))
        }
    }
}

impl Figure for XyChart {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let err = draw_err(&self.name);
        let [(x0, x1), (y0, y1)] = self.extent()?;
        let (_, h) = root.dim_in_pixel();
        // The caption line under everything.
        let (body, foot) = if self.caption.is_empty() {
            (root.clone(), None)
        } else {
            let (a, b) = root.split_vertically(h.saturating_sub(28));
            (a, Some(b))
        };
        // The title across the whole width, above the plot and the legend.
        let body = body.titled(&self.title, (FONT_FAMILY, 22)).map_err(&err)?;
        let (w, _) = body.dim_in_pixel();
        // The legend in its own column, right of the plotting area.
        let entries = if self.legend == LegendPosition::None { Vec::new() } else { self.legend_entries() };
        let longest = entries.iter().map(|(n, _, _)| n.chars().count()).max().unwrap_or(0) as u32;
        let legend_w = if entries.is_empty() { 0 } else { (8 * longest + 48).min(w / 3) };
        let (plot, legend) = if legend_w > 0 {
            let (a, b) = body.split_horizontally(w - legend_w);
            (a, Some(b))
        } else {
            (body, None)
        };
        // Room for the longest category name on the y axis (about 8 px a character at 14 px).
        let longest_cat = self.y.categories.iter().map(|c| c.chars().count()).max().unwrap_or(0) as u32;
        let (xb, xl) = key_points(&self.x, (x0, x1));
        let (yb, yl) = key_points(&self.y, (y0, y1));
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(72.max(8 * longest_cat + 24))
            .build_cartesian_2d(Ticks::new(x0..x1, xb, xl), Ticks::new(y0..y1, yb, yl))
            .map_err(&err)?;
        let xf = |v: &f64| axis_label(&self.x, *v);
        let yf = |v: &f64| axis_label(&self.y, *v);
        chart
            .configure_mesh()
            .x_desc(self.x.label.as_str())
            .y_desc(self.y.label.as_str())
            .x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 16))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(&err)?;
        let (xa, ya) = (&self.x, &self.y);
        let map = |&(x, y): &(f64, f64)| (xa.map(x), ya.map(y));

        for r in &self.rects {
            let style = r.color.filled();
            chart
                .draw_series(std::iter::once(Rectangle::new([map(&(r.x0, r.y0)), map(&(r.x1, r.y1))], style)))
                .map_err(&err)?;
        }
        for s in &self.series {
            let pts: Vec<(f64, f64)> = s.points.iter().map(map).collect();
            let c = s.color;
            match s.style {
                SeriesStyle::Line { width } => {
                    chart.draw_series(LineSeries::new(pts, c.stroke_width(width))).map_err(&err)?;
                }
                SeriesStyle::Dashed { width } => {
                    chart.draw_series(DashedLineSeries::new(pts, 8, 5, c.stroke_width(width))).map_err(&err)?;
                }
                SeriesStyle::Step { width } => {
                    let mut stepped = Vec::with_capacity(pts.len() * 2);
                    for (i, p) in pts.iter().enumerate() {
                        if i > 0 {
                            stepped.push((p.0, pts[i - 1].1));
                        }
                        stepped.push(*p);
                    }
                    chart.draw_series(LineSeries::new(stepped, c.stroke_width(width))).map_err(&err)?;
                }
                SeriesStyle::Points { radius } => {
                    chart.draw_series(pts.into_iter().map(|p| Circle::new(p, radius, c.filled()))).map_err(&err)?;
                }
            }
        }
        for t in &self.texts {
            let style = TextStyle::from((FONT_FAMILY, 13).into_font()).color(&t.color);
            chart.draw_series(std::iter::once(Text::new(t.text.clone(), map(&(t.x, t.y)), style))).map_err(&err)?;
        }
        if let Some(area) = legend {
            let style = TextStyle::from((FONT_FAMILY, 14).into_font()).color(&BLACK);
            let rows = entries.len() as i32;
            let (_, lh) = area.dim_in_pixel();
            let top = match self.legend {
                LegendPosition::LowerLeft | LegendPosition::LowerRight => (lh as i32 - 62 - 22 * rows).max(20),
                _ => 20,
            };
            for (i, (name, c, kind)) in entries.iter().enumerate() {
                let y = top + 22 * i as i32;
                let c = *c;
                match kind {
                    None => area.draw(&Rectangle::new([(4, y - 6), (20, y + 6)], c.filled())),
                    Some(SeriesStyle::Points { radius }) => {
                        area.draw(&Circle::new((12, y), (*radius).max(3), c.filled()))
                    }
                    Some(SeriesStyle::Dashed { .. }) => area
                        .draw(&PathElement::new(vec![(2, y), (9, y)], c.stroke_width(3)))
                        .and_then(|_| area.draw(&PathElement::new(vec![(14, y), (22, y)], c.stroke_width(3)))),
                    Some(_) => area.draw(&PathElement::new(vec![(2, y), (22, y)], c.stroke_width(3))),
                }
                .map_err(&err)?;
                area.draw(&Text::new(name.clone(), (28, y - 8), style.clone())).map_err(&err)?;
            }
        }
        if let Some(area) = foot {
            let style = TextStyle::from((FONT_FAMILY, 13).into_font()).color(&RGBColor(80, 80, 80));
            area.draw(&Text::new(self.caption.clone(), (14, 6), style)).map_err(&err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> XyChart {
        let mut c = XyChart::new("t", "test", Axis::log("x"), Axis::linear("y"));
        c.series.push(Series {
            name: "a".into(),
            color: color(0),
            style: SeriesStyle::Line { width: 2 },
            points: vec![(1.0, 1.0), (100.0, 3.0)],
            in_legend: true,
        });
        c.rects.push(RectMark { x0: 2.0, x1: 5.0, y0: 0.0, y1: 1.0, color: color(1), legend: Some("r".into()) });
        c
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(1.0), "1");
        assert_eq!(tick_label(1500.0), "1500");
        assert_eq!(tick_label(15000.0), "15k");
        assert_eq!(tick_label(2.5e6), "2.5M");
        assert_eq!(tick_label(0.25), "0.25");
    }

    #[test]
    fn renders_png_and_svg_deterministically() {
        let a = render(&sample()).unwrap();
        let b = render(&sample()).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a.png[1..4], b"PNG");
        let svg = String::from_utf8(a.svg).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("\ntest\n</text>"), "{}", &svg[..200.min(svg.len())]);
    }

    #[test]
    fn non_positive_values_on_a_log_axis_are_an_error() {
        let mut c = sample();
        c.series[0].points.push((0.0, 1.0));
        let e = render(&c).unwrap_err();
        assert!(e.to_string().contains("log") || e.to_string().contains("Log"), "{e}");
    }
}
