//! The inference engine: ONNX Runtime (the `ort` crate over the shared library named in the config, loaded at start),
//! the configured detection models, and inference threads of its own behind one bounded queue. A frame offered when
//! the queue is full is dropped and counted, never waited for: the media and API runtimes never run a model.
//! `prepare` turns frames into model inputs, `decode` model outputs into boxes.

pub mod decode;
pub mod prepare;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gstreamer as gst;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::config::{ConfigError, InferenceConfig, ModelConfig, ModelKind, Provider};
use decode::Output;
use prepare::{InputShape, Letterbox, Preparer};

/// Inference times kept per model for percentiles.
const TIMES_KEPT: usize = 512;
/// Bucket bounds (ms) of the inference-time histogram.
pub const BUCKETS_MS: [f64; 10] = [5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 120.0, 200.0, 400.0, 1000.0];

/// One object in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub label: String,
    pub score: f32,
    /// x1, y1, x2, y2 as fractions of the frame's width and height.
    pub rect: [f32; 4],
}

/// What a model saw in a frame.
#[derive(Debug, Clone)]
pub struct Inference {
    pub detections: Vec<Detection>,
    /// Time in the model itself.
    pub run: Duration,
    /// Time making the input (scaling, conversion).
    pub prepare: Duration,
}

/// A loaded model: a session per inference thread and its timings.
pub struct Model {
    pub config: ModelConfig,
    pub shape: InputShape,
    /// The provider actually running it.
    pub provider: Provider,
    input_name: String,
    /// One session per inference thread, so threads run one model in parallel (a session runs one frame at a time).
    sessions: Vec<Mutex<(ort::session::Session, Preparer)>>,
    stats: Mutex<Timings>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.config.name).field("provider", &self.provider).finish()
    }
}

#[derive(Debug, Default)]
struct Timings {
    recent: VecDeque<f64>,
    runs: u64,
    sum_ms: f64,
    /// Cumulative counts per bucket of `BUCKETS_MS` (and one beyond).
    buckets: [u64; BUCKETS_MS.len() + 1],
}

/// A model's figures, as status and metrics report them.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub name: String,
    pub kind: ModelKind,
    pub provider: Provider,
    pub input: (u32, u32),
    pub labels: usize,
    pub runs: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sum_ms: f64,
    pub buckets: [u64; BUCKETS_MS.len() + 1],
}

impl Model {
    /// Runs the model on a raw video frame, on the caller's thread.
    pub fn detect(&self, frame: &gst::Sample, min_score: f32) -> Result<Inference, String> {
        let started = Instant::now();
        // A free session, else wait for the first.
        let mut guard = self.sessions.iter().find_map(|s| s.try_lock()).unwrap_or_else(|| self.sessions[0].lock());
        let (session, preparer) = &mut *guard;
        let (input, letterbox) = preparer.prepare(frame)?;
        let prepared = started.elapsed();
        let (w, h) = (self.shape.width as usize, self.shape.height as usize);
        let dims = if self.shape.planar { [1, 3, h, w] } else { [1, h, w, 3] };
        let tensor = ort::value::Tensor::from_array((dims, input)).map_err(|e| e.to_string())?;
        let ran = Instant::now();
        let outputs = session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| e.to_string())?;
        let run = ran.elapsed();
        let mut views = Vec::with_capacity(outputs.len());
        for i in 0..outputs.len() {
            let (shape, data) = outputs[i].try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
            views.push((shape.to_vec(), data));
        }
        let views: Vec<Output> = views.iter().map(|(shape, data)| Output { shape, data }).collect();
        let boxes = decode::decode(self.config.kind, &views, (self.shape.width, self.shape.height), min_score)?;
        drop(outputs);
        drop(guard);
        self.record(run);
        Ok(Inference { detections: self.to_frame(&boxes, &letterbox), run, prepare: prepared })
    }

    fn to_frame(&self, boxes: &[decode::RawBox], letterbox: &Letterbox) -> Vec<Detection> {
        boxes
            .iter()
            .filter_map(|b| {
                let label = self.config.labels.get(b.class)?.clone();
                let rect = letterbox.to_frame(b.rect);
                (rect[2] > rect[0] && rect[3] > rect[1]).then_some(Detection {
                    class: b.class,
                    label,
                    score: b.score,
                    rect,
                })
            })
            .collect()
    }

    fn record(&self, run: Duration) {
        let ms = run.as_secs_f64() * 1000.0;
        let mut t = self.stats.lock();
        if t.recent.len() == TIMES_KEPT {
            t.recent.pop_front();
        }
        t.recent.push_back(ms);
        t.runs += 1;
        t.sum_ms += ms;
        let bucket = BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(BUCKETS_MS.len());
        t.buckets[bucket] += 1;
    }

    pub fn status(&self) -> ModelStatus {
        let t = self.stats.lock();
        let mut sorted: Vec<f64> = t.recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        ModelStatus {
            name: self.config.name.clone(),
            kind: self.config.kind,
            provider: self.provider,
            input: (self.shape.width, self.shape.height),
            labels: self.config.labels.len(),
            runs: t.runs,
            p50_ms: percentile(&sorted, 0.5),
            p99_ms: percentile(&sorted, 0.99),
            sum_ms: t.sum_ms,
            buckets: t.buckets,
        }
    }
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A frame waiting for a model, and what to do with the answer (called on the inference thread).
pub struct Job {
    pub model: Arc<Model>,
    pub frame: gst::Sample,
    pub min_score: f32,
    pub done: Box<dyn FnOnce(Result<Inference, String>) + Send>,
}

/// The engine: runtime, models, inference threads.
pub struct Engine {
    pub provider: Provider,
    models: HashMap<String, Arc<Model>>,
    queue: std::sync::mpsc::SyncSender<Job>,
    capacity: usize,
    waiting: Arc<AtomicU64>,
    dropped: AtomicU64,
    threads: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("provider", &self.provider).field("models", &self.models.len()).finish()
    }
}

/// The process's ONNX Runtime environment: the library loads once per process.
static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment(path: &Path) -> Result<ort::environment::Environment, String> {
    RUNTIME
        .get_or_init(|| {
            if !path.is_file() {
                return Err(format!("{} is not a file (run scripts/install-models.sh)", path.display()));
            }
            let builder = ort::init_from(path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            builder.with_name("camhub").with_telemetry(false).build().map_err(|e| e.to_string())
        })
        .clone()
}

impl Engine {
    /// Loads the runtime and every model, and starts the inference threads. A problem names its config key.
    pub fn start(config: &InferenceConfig) -> Result<Engine, ConfigError> {
        let env =
            environment(&config.runtime).map_err(|problem| ConfigError { key: "inference.runtime".into(), problem })?;
        let mut models = HashMap::new();
        let mut provider = config.provider;
        for (i, m) in config.models.iter().enumerate() {
            let model = load(&env, m, config.provider, config.threads)
                .map_err(|problem| ConfigError { key: format!("inference.models[{i}].path"), problem })?;
            provider = model.provider;
            info!(model = m.name, provider = model.provider.as_str(), input = %format!("{}x{}", model.shape.width, model.shape.height), "model loaded");
            models.insert(m.name.clone(), Arc::new(model));
        }
        let (queue, rx) = std::sync::mpsc::sync_channel::<Job>(config.queue);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let waiting = Arc::new(AtomicU64::new(0));
        for n in 0..config.threads {
            let (rx, waiting) = (rx.clone(), waiting.clone());
            std::thread::Builder::new()
                .name(format!("inference-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job, never while running one.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        waiting.fetch_sub(1, Ordering::Relaxed);
                        let result = job.model.detect(&job.frame, job.min_score);
                        (job.done)(result);
                    }
                })
                .map_err(|e| ConfigError { key: "inference.threads".into(), problem: e.to_string() })?;
        }
        Ok(Engine {
            provider,
            models,
            queue,
            capacity: config.queue,
            waiting,
            dropped: AtomicU64::new(0),
            threads: config.threads,
        })
    }

    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.models.get(name).cloned()
    }

    pub fn models(&self) -> Vec<Arc<Model>> {
        let mut models: Vec<_> = self.models.values().cloned().collect();
        models.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        models
    }

    /// Queues a frame; `false` (and one more drop counted) when the queue is full.
    pub fn submit(&self, job: Job) -> bool {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Frames dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames waiting now, and the queue's capacity.
    pub fn queue(&self) -> (u64, usize) {
        (self.waiting.load(Ordering::Relaxed), self.capacity)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// Opens a model file on `wanted`, or on the CPU with one log line when that provider cannot be registered.
fn load(
    env: &ort::environment::Environment,
    config: &ModelConfig,
    wanted: Provider,
    sessions: usize,
) -> Result<Model, String> {
    if !config.path.is_file() {
        return Err(format!("{} is not a file", config.path.display()));
    }
    let open = |provider: Provider| -> Result<ort::session::Session, String> {
        let builder = ort::session::Session::builder(env).map_err(|e| e.to_string())?;
        let text = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
        let builder = builder
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
            .map_err(text)?
            .with_intra_threads(1)
            .map_err(text)?
            .with_inter_threads(1)
            .map_err(text)?;
        let mut builder = match provider {
            Provider::Cpu => builder,
            Provider::Cuda => builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| e.to_string())?,
            Provider::TensorRt => builder
                .with_execution_providers([ort::ep::TensorRT::default().build().error_on_failure()])
                .map_err(|e| e.to_string())?,
        };
        builder.commit_from_file(&config.path).map_err(|e| format!("{}: {e}", config.path.display()))
    };
    let (session, provider) = match open(wanted) {
        Ok(session) => (session, wanted),
        Err(e) if wanted != Provider::Cpu => {
            warn!(model = config.name, provider = wanted.as_str(), err = %e, "execution provider unavailable; running on the CPU");
            (open(Provider::Cpu)?, Provider::Cpu)
        }
        Err(e) => return Err(e),
    };
    let input = session.inputs().first().ok_or("the model has no input")?;
    let dims: Vec<i64> = input.dtype().tensor_shape().map(|s| s.to_vec()).ok_or("the model's input is not a tensor")?;
    let shape = match dims.as_slice() {
        [_, 3, h, w] if *h > 0 && *w > 0 => {
            InputShape { width: *w as u32, height: *h as u32, planar: true, range: config.input }
        }
        [_, h, w, 3] if *h > 0 && *w > 0 => {
            InputShape { width: *w as u32, height: *h as u32, planar: false, range: config.input }
        }
        _ => return Err(format!("input {dims:?} is not [1,3,H,W] or [1,H,W,3] with a fixed size")),
    };
    let input_name = input.name().to_owned();
    let mut all = vec![Mutex::new((session, Preparer::new(shape)))];
    for _ in 1..sessions.max(1) {
        all.push(Mutex::new((open(provider)?, Preparer::new(shape))));
    }
    Ok(Model {
        config: config.clone(),
        shape,
        provider,
        input_name,
        sessions: all,
        stats: Mutex::new(Timings::default()),
    })
}
