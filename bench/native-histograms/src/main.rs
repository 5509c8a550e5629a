//! Figures for issue "optional native histograms": what moving the request-duration
//! histogram from `prometheus` 0.14 to `prometheus-client` 0.25 (classic, or classic +
//! native) costs per observation, per scrape and per series. Measurement only; see
//! README.md. Run: `CARGO_TARGET_DIR=../../target/bench-native cargo run --release`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write as _;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram as PcHistogram, NativeHistogramConfig};

// ---------------------------------------------------------------------------------------
// Heap accounting: live bytes, to get memory per series without RSS noise.

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            LIVE.fetch_add(new_size as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// Deterministic latency mix.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Seconds: 70 % fast (median 15 ms), 25 % medium (120 ms), 5 % slow (1.2 s), each
    /// lognormal.
    fn latency(&mut self) -> f64 {
        let p = self.unit();
        let (median, sigma) = if p < 0.70 {
            (0.015, 0.5)
        } else if p < 0.95 {
            (0.120, 0.7)
        } else {
            (1.2, 0.8)
        };
        median * (sigma * self.normal()).exp()
    }
}

const SAMPLES: usize = 1 << 16;
const MASK: usize = SAMPLES - 1;

fn samples() -> Vec<f64> {
    let mut r = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..SAMPLES).map(|_| r.latency()).collect()
}

/// The default `metrics.durationBuckets` (14) plus 6 latency thresholds: 20 boundaries.
fn buckets() -> Vec<f64> {
    let mut b = vec![
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, // defaults
        0.2, 0.3, 0.4, 2.0, 3.0, 15.0, // thresholds
    ];
    b.sort_by(f64::total_cmp);
    b
}

/// client_golang's usual settings: factor 1.1 (schema 3), at most 160 buckets, reset
/// after 1 h rather than lose resolution.
fn native_config() -> NativeHistogramConfig {
    NativeHistogramConfig::new(1.1)
        .max_buckets(160)
        .min_reset_duration(Duration::from_secs(3600))
}

// ---------------------------------------------------------------------------------------
// prometheus-client side.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    http_route: String,
    http_request_method: &'static str,
    http_response_status_code: &'static str,
    error_type: &'static str,
}

#[derive(Clone)]
struct Ctor {
    buckets: Vec<f64>,
    native: Option<NativeHistogramConfig>,
}

impl MetricConstructor<PcHistogram> for Ctor {
    fn new_metric(&self) -> PcHistogram {
        match self.native {
            None => PcHistogram::new(self.buckets.iter().copied()),
            Some(n) => PcHistogram::new_classic_and_native(self.buckets.iter().copied(), n),
        }
    }
}

type PcFamily = Family<Labels, PcHistogram, Ctor>;

fn pc_family(native: bool) -> PcFamily {
    Family::new_with_constructor(Ctor {
        buckets: buckets(),
        native: native.then(native_config),
    })
}

const NAME: &str = "http_server_request_duration_seconds";
const HELP: &str = "Duration of HTTP server requests.";
const LABELS: [&str; 4] = [
    "http_route",
    "http_request_method",
    "http_response_status_code",
    "error_type",
];

fn prom_vec() -> prometheus::HistogramVec {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(NAME, HELP).buckets(buckets()),
        &LABELS,
    )
    .expect("histogram vec")
}

// ---------------------------------------------------------------------------------------
// Observation cost.

/// ns per observation seen by each thread (wall time of the slowest thread / iterations),
/// median of `reps` runs.
fn ns_per_obs<F: Fn(f64) + Sync>(f: &F, threads: usize, iters: usize, reps: usize, vals: &[f64]) -> f64 {
    let mut runs: Vec<f64> = (0..reps)
        .map(|_| {
            let barrier = Barrier::new(threads);
            let worst = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let barrier = &barrier;
                        s.spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            let mut i = t * 7919;
                            for _ in 0..iters {
                                f(black_box(vals[i & MASK]));
                                i += 1;
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("bench thread"))
                    .max()
                    .expect("threads")
            });
            worst.as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[reps / 2]
}

fn observation_table(vals: &[f64]) {
    const ITERS: usize = 1_000_000;
    const REPS: usize = 5;
    let route = "/api/v1/users/{id}";
    let pl = [route, "GET", "200", ""];
    let labels = Labels {
        http_route: route.to_string(),
        http_request_method: "GET",
        http_response_status_code: "200",
        error_type: "",
    };

    let baseline = |v: f64| {
        black_box(v);
    };

    let pvec = prom_vec();
    let a = |v: f64| pvec.with_label_values(&pl).observe(v);
    let ph = pvec.with_label_values(&pl);
    let b = |v: f64| ph.observe(v);

    let classic = pc_family(false);
    let c = |v: f64| classic.get_or_create(&labels).observe(v);
    let ch = classic.get_or_create_owned(&labels);
    let c2 = |v: f64| ch.observe(v);

    let native = pc_family(true);
    let d = |v: f64| native.get_or_create(&labels).observe(v);
    let nh = native.get_or_create_owned(&labels);
    let e = |v: f64| nh.observe(v);

    println!("## 1. Cost per observation (ns; median of {REPS} runs of {ITERS} observations per thread)\n");
    println!("| variant | 1 thread | 2 threads, same series |");
    println!("|---|---:|---:|");
    let row = |name: &str, one: f64, two: f64| println!("| {name} | {one:.1} | {two:.1} |");
    macro_rules! bench {
        ($name:expr, $f:expr) => {{
            let one = ns_per_obs(&$f, 1, ITERS, REPS, vals);
            let two = ns_per_obs(&$f, 2, ITERS, REPS, vals);
            row($name, one, two);
        }};
    }
    bench!("loop + sample load only (baseline)", baseline);
    bench!("(a) prometheus 0.14 `with_label_values(&[4])`", a);
    bench!("(b) prometheus 0.14 pre-resolved `Histogram`", b);
    bench!("(c) prometheus-client classic `get_or_create`", c);
    bench!("(c') prometheus-client classic pre-resolved", c2);
    bench!("(d) prometheus-client classic+native `get_or_create`", d);
    bench!("(e) prometheus-client classic+native pre-resolved", e);
    println!();
}

// ---------------------------------------------------------------------------------------
// Exposition and memory: 50 routes x 3 methods x 5 statuses = 750 series.

const METHODS: [&str; 3] = ["GET", "POST", "PUT"];
const STATUSES: [(&str, &str); 5] = [("200", ""), ("201", ""), ("404", ""), ("500", "500"), ("503", "503")];
const ROUTES: usize = 50;
const SERIES: usize = ROUTES * METHODS.len() * STATUSES.len();
const OBSERVATIONS: usize = 100_000;

fn route_names() -> Vec<String> {
    (0..ROUTES).map(|i| format!("/api/v1/resource{i:02}/{{id}}")).collect()
}

/// Every series once (the zero series), then `OBSERVATIONS` observations on random series.
fn fill(mut observe: impl FnMut(usize, usize, usize, Option<f64>)) {
    for r in 0..ROUTES {
        for m in 0..METHODS.len() {
            for s in 0..STATUSES.len() {
                observe(r, m, s, None);
            }
        }
    }
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    for _ in 0..OBSERVATIONS {
        let x = rng.next();
        let (r, m, s) = ((x % 50) as usize, ((x >> 8) % 3) as usize, ((x >> 16) % 5) as usize);
        observe(r, m, s, Some(rng.latency()));
    }
}

fn pc_labels(routes: &[String], r: usize, m: usize, s: usize) -> Labels {
    Labels {
        http_route: routes[r].clone(),
        http_request_method: METHODS[m],
        http_response_status_code: STATUSES[s].0,
        error_type: STATUSES[s].1,
    }
}

struct Scrape {
    name: &'static str,
    bytes: usize,
    gzip: usize,
    micros: f64,
}

fn time_scrape(name: &'static str, mut f: impl FnMut() -> Vec<u8>) -> Scrape {
    for _ in 0..2 {
        black_box(f());
    }
    let mut times: Vec<f64> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        out = black_box(f());
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&out).expect("gzip");
    let gzip = gz.finish().expect("gzip").len();
    Scrape {
        name,
        bytes: out.len(),
        gzip,
        micros: times[times.len() / 2],
    }
}

struct Mem {
    name: &'static str,
    created: isize,
    after_obs: isize,
}

fn exposition_and_memory() {
    let routes = route_names();
    let mut scrapes = Vec::new();
    let mut mems = Vec::new();

    // prometheus 0.14, text.
    {
        let before = live();
        let registry = prometheus::Registry::new();
        let vec = prom_vec();
        registry.register(Box::new(vec.clone())).expect("register");
        let mut created = 0;
        let mut seen = 0;
        fill(|r, m, s, v| {
            let h = vec.with_label_values(&[&routes[r], METHODS[m], STATUSES[s].0, STATUSES[s].1]);
            match v {
                Some(v) => h.observe(v),
                None => {
                    seen += 1;
                    if seen == SERIES {
                        created = live() - before;
                    }
                }
            }
        });
        mems.push(Mem { name: "prometheus 0.14 (classic, 20 buckets)", created, after_obs: live() - before });
        scrapes.push(time_scrape("prometheus 0.14, text 0.0.4", || {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf)
                .expect("encode");
            buf
        }));
    }

    for native in [false, true] {
        let before = live();
        let mut registry = prometheus_client::registry::Registry::default();
        let fam = pc_family(native);
        registry.register(NAME.trim_end_matches("_seconds"), HELP, fam.clone());
        let mut created = 0;
        let mut seen = 0;
        fill(|r, m, s, v| {
            let l = pc_labels(&routes, r, m, s);
            match v {
                Some(v) => fam.get_or_create(&l).observe(v),
                None => {
                    drop(fam.get_or_create(&l));
                    seen += 1;
                    if seen == SERIES {
                        created = live() - before;
                    }
                }
            }
        });
        mems.push(Mem {
            name: if native {
                "prometheus-client classic + native"
            } else {
                "prometheus-client classic"
            },
            created,
            after_obs: live() - before,
        });
        scrapes.push(time_scrape(
            if native {
                "prometheus-client (native on), OpenMetrics text (classic only)"
            } else {
                "prometheus-client (classic), OpenMetrics text"
            },
            || {
                let mut s = String::new();
                prometheus_client::encoding::text::encode(&mut s, &registry).expect("encode");
                s.into_bytes()
            },
        ));
        scrapes.push(time_scrape(
            if native {
                "prometheus-client (native on), protobuf (classic + native)"
            } else {
                "prometheus-client (classic), protobuf"
            },
            || prometheus_client::encoding::prometheus_protobuf::encode_to_vec(&registry).expect("encode"),
        ));
    }

    println!("## 2. Exposition: {SERIES} series after {OBSERVATIONS} observations (median of 15 scrapes)\n");
    println!("| format | bytes | gzip bytes | µs per scrape |");
    println!("|---|---:|---:|---:|");
    for s in &scrapes {
        println!("| {} | {} | {} | {:.0} |", s.name, s.bytes, s.gzip, s.micros);
    }
    println!();

    println!("## 3. Heap per series ({SERIES} series; labels, map entry and histogram included)\n");
    println!("| library | bytes/series, created | bytes/series, after {OBSERVATIONS} obs |");
    println!("|---|---:|---:|");
    for m in &mems {
        println!(
            "| {} | {} | {} |",
            m.name,
            m.created / SERIES as isize,
            m.after_obs / SERIES as isize
        );
    }
    println!();
}

/// One busy series: how many native buckets does the mix fill, and what does it weigh.
fn steady_state_native(vals: &[f64]) {
    use prometheus_client::encoding::prometheus_protobuf::encode;
    println!("## 3b. One native series after N observations of the mix\n");
    println!("| observations | native schema | populated buckets | heap bytes of the series |");
    println!("|---:|---:|---:|---:|");
    for n in [100usize, 10_000, 1_000_000] {
        let before = live();
        let h = PcHistogram::new_classic_and_native(buckets(), native_config());
        let mut r = XorShift(0x2545_F491_4F6C_DD1D);
        for i in 0..n {
            // Fresh draws beyond the 64 Ki table, so the tail is explored.
            let v = if i < SAMPLES { vals[i] } else { r.latency() };
            h.observe(v);
        }
        let bytes = live() - before;
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h", "h", h);
        let fams = encode(&registry).expect("encode");
        let hist = fams[0].metric[0].histogram.as_ref().expect("histogram");
        let populated: u32 = hist.positive_span.iter().map(|s| s.length).sum();
        println!("| {n} | {} | {populated} | {bytes} |", hist.schema);
    }
    println!();
}

fn main() {
    let t0 = Instant::now();
    let vals = samples();
    println!(
        "# native-histograms bench: prometheus 0.14 vs prometheus-client 0.25.2\n\n{} cores visible; {} classic buckets; native factor 1.1 (schema 3), max 160 buckets\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        buckets().len()
    );
    observation_table(&vals);
    exposition_and_memory();
    steady_state_native(&vals);
    println!("total run time {:.1} s", t0.elapsed().as_secs_f64());
}
