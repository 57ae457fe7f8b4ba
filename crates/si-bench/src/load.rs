//! The load generator: one HTTP/1.1 connection per worker, requests one after another
//! on it (closed loop) or at a set rate (paced), and streams held open at once.
//! Latencies go into HDR histograms, in microseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// Where requests go and what they carry.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its address.
    pub address: SocketAddr,
    /// The request path.
    pub path: &'static str,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Bytes,
}

/// Latencies and counts of one measurement.
pub struct Sample {
    /// Request latencies, µs.
    pub latency: Histogram<u64>,
    /// Requests answered 200 in full.
    pub ok: u64,
    /// Requests that failed (status, connection).
    pub errors: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Sample {
    fn new() -> Sample {
        Sample {
            latency: histogram(),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: &Sample) {
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.errors += other.errors;
    }

    /// Requests per second answered.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A histogram of 1 µs to 100 s at 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| unreachable!())
}

async fn connect(address: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

fn request(target: &Target) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::post(target.path)
        .header(http::header::HOST, target.address.to_string())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = &target.authorization {
        builder = builder.header(http::header::AUTHORIZATION, authorization);
    }
    builder
        .body(Full::new(target.body.clone()))
        .unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
}

/// How one exchange went.
enum Outcome {
    /// A 200, read to the end.
    Ok,
    /// Another status, or the connection broke mid-request.
    Failed,
    /// The server had closed the connection before the request (a keep-alive limit):
    /// not an error, reconnect and send again.
    Closed,
}

/// One request on `sender`, read to the end.
async fn exchange(sender: &mut SendRequest<Full<Bytes>>, target: &Target) -> Outcome {
    if sender.ready().await.is_err() {
        return Outcome::Closed;
    }
    match sender.send_request(request(target)).await {
        Ok(response) => {
            let ok = response.status() == http::StatusCode::OK;
            if ok && response.into_body().collect().await.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            }
        }
        Err(e) if e.is_canceled() => Outcome::Closed,
        Err(_) => Outcome::Failed,
    }
}

/// `connections` workers, each sending its next request when the last is answered,
/// for `duration` after `warmup`.
pub async fn closed_loop(
    target: &Target,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Sample {
    closed_loop_across(std::slice::from_ref(target), connections, warmup, duration).await
}

/// [`closed_loop`] spread over `targets` (several gateways with nothing in between):
/// worker `i` sends to target `i mod n`, so the connections split evenly; with
/// fewer connections than targets each worker takes the targets in turn, a request
/// each, over a connection to each.
pub async fn closed_loop_across(
    targets: &[Target],
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Sample {
    run_workers(targets, connections, warmup, duration, None).await
}

/// `connections` workers sending `rate` requests per second between them, each on
/// its own schedule; a request is sent late, never skipped, when the last one on
/// its connection is slow (the achieved rate then falls short, which the caller
/// checks).
pub async fn paced(
    target: &Target,
    rate: f64,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Sample {
    let period = Duration::from_secs_f64(connections as f64 / rate.max(1.0));
    let targets = std::slice::from_ref(target);
    run_workers(targets, connections, warmup, duration, Some(period)).await
}

/// When a worker measures, and how it paces itself.
#[derive(Clone, Copy)]
struct Schedule {
    warmup: Duration,
    duration: Duration,
    /// Between one request and the next (paced); `None`: closed loop.
    period: Option<Duration>,
    /// Where in the period this worker starts.
    offset: Duration,
}

async fn run_workers(
    targets: &[Target],
    connections: usize,
    warmup: Duration,
    duration: Duration,
    period: Option<Duration>,
) -> Sample {
    let barrier = Arc::new(Barrier::new(connections + 1));
    let mut workers = Vec::with_capacity(connections);
    for worker in 0..connections {
        let lanes = match targets.len() {
            0 => Vec::new(),
            n if connections >= n => vec![targets[worker % n].clone()],
            _ => targets.to_vec(),
        };
        let schedule = Schedule {
            warmup,
            duration,
            period,
            // Spread the workers' schedules over one period.
            offset: period
                .map(|p| p.mul_f64(worker as f64 / connections as f64))
                .unwrap_or_default(),
        };
        workers.push(tokio::spawn(run_worker(lanes, barrier.clone(), schedule)));
    }
    barrier.wait().await;
    let mut total = Sample::new();
    for worker in workers {
        if let Ok(sample) = worker.await {
            total.merge(&sample);
        }
    }
    total.elapsed = duration;
    total
}

/// One worker: a connection to each of `lanes`, which it sends to in turn.
async fn run_worker(lanes: Vec<Target>, barrier: Arc<Barrier>, schedule: Schedule) -> Sample {
    let mut senders = Vec::with_capacity(lanes.len());
    for lane in &lanes {
        senders.push(connect(lane.address).await.ok());
    }
    barrier.wait().await;
    let mut sample = Sample::new();
    if lanes.is_empty() {
        return sample;
    }
    let start = Instant::now();
    let measure_from = start + schedule.warmup;
    let end = measure_from + schedule.duration;
    let mut next = start + schedule.offset;
    for turn in (0..lanes.len()).cycle() {
        let (target, sender) = (&lanes[turn], &mut senders[turn]);
        if let Some(period) = schedule.period {
            tokio::time::sleep_until(next.into()).await;
            next += period;
        }
        let mut sent = Instant::now();
        if sent >= end {
            break;
        }
        let mut outcome = match sender.as_mut() {
            Some(s) => exchange(s, target).await,
            None => Outcome::Failed,
        };
        if let Outcome::Closed = outcome {
            *sender = connect(target.address).await.ok();
            sent = Instant::now();
            outcome = match sender.as_mut() {
                Some(s) => exchange(s, target).await,
                None => Outcome::Failed,
            };
        }
        let done = Instant::now();
        let ok = matches!(outcome, Outcome::Ok);
        if sent >= measure_from {
            if ok {
                sample.ok += 1;
                let _ = sample
                    .latency
                    .record((done - sent).as_micros().max(1) as u64);
            } else {
                sample.errors += 1;
            }
        }
        if !ok {
            *sender = connect(target.address).await.ok();
        }
    }
    sample
}

/// What many streams held open at once saw.
pub struct StreamSample {
    /// Request sent to first body frame, µs.
    pub first_chunk: Histogram<u64>,
    /// Between successive frames of one stream, µs.
    pub gap: Histogram<u64>,
    /// Streams that ended with `[DONE]` and every chunk.
    pub complete: u64,
    /// Streams that failed or lost a chunk.
    pub failed: u64,
}

/// `streams` streaming requests, each on its own connection (all opened first),
/// started evenly over `ramp` so that each one's time to first chunk is measured
/// while the others are open rather than in one burst; each is expected to carry
/// `events` `data:` events.
pub async fn streams(
    target: &Target,
    streams: usize,
    events: usize,
    ramp: Duration,
) -> StreamSample {
    let barrier = Arc::new(Barrier::new(streams));
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let target = target.clone();
        let barrier = barrier.clone();
        let delay = ramp.mul_f64(i as f64 / streams.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            let sender = connect(target.address).await;
            barrier.wait().await;
            tokio::time::sleep(delay).await;
            match sender {
                Ok(mut sender) => one_stream(&mut sender, &target, events).await,
                Err(_) => None,
            }
        }));
    }
    let mut sample = StreamSample {
        first_chunk: histogram(),
        gap: histogram(),
        complete: 0,
        failed: 0,
    };
    for task in tasks {
        match task.await.ok().flatten() {
            Some((first, gaps)) => {
                sample.complete += 1;
                let _ = sample.first_chunk.record(first);
                for gap in gaps {
                    let _ = sample.gap.record(gap);
                }
            }
            None => sample.failed += 1,
        }
    }
    sample
}

/// Time to the first frame and the gaps between frames, if the stream was whole.
async fn one_stream(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    events: usize,
) -> Option<(u64, Vec<u64>)> {
    sender.ready().await.ok()?;
    let sent = Instant::now();
    let response = sender.send_request(request(target)).await.ok()?;
    if response.status() != http::StatusCode::OK {
        return None;
    }
    let mut body = response.into_body();
    let mut first = None;
    let mut last = sent;
    let mut gaps = Vec::with_capacity(events);
    let mut seen = 0;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        match first {
            None => first = Some((now - sent).as_micros().max(1) as u64),
            Some(_) => gaps.push((now - last).as_micros().max(1) as u64),
        }
        last = now;
        seen += data.windows(6).filter(|w| w == b"data: ").count();
        text.extend_from_slice(data);
    }
    let done = text.ends_with(b"data: [DONE]\n\n");
    (done && seen == events).then_some((first?, gaps))
}
