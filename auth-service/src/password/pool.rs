//! A fixed set of dedicated threads that own the hashing jobs. The async side only hands a job
//! over (or is refused at once when the queue is full); a cancelled call cannot free a slot
//! while its hash still runs, because no slot lives in the call. At most `workers` jobs run
//! and at most `queue` wait, whatever clients do, and a queued job whose caller has gone is
//! dropped before it starts.

use std::{marker::PhantomData, panic::AssertUnwindSafe, sync::Arc, thread};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::{error::AuthError, metrics::Metrics};

/// The shape of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    /// Threads, each computing one job at a time (at least one).
    pub workers: usize,
    /// Jobs allowed to wait for a thread; 0 runs a job only if a thread is idle.
    pub queue: usize,
    /// Nice levels the threads run below the rest of the process (Linux; 0 = same).
    pub nice: i32,
}

/// Worker threads, each holding its own state `S` (its argon2 memory) for its whole life.
/// They stop once every handle to the pool is dropped and the queue is drained.
pub struct Pool<S> {
    jobs: Sender<Box<dyn Job<S>>>,
    metrics: Arc<Metrics>,
}

impl<S: 'static> Pool<S> {
    /// Starts `size.workers` threads named `hash-worker-N`; each builds its state with `init`
    /// on its own thread, after lowering its priority.
    pub fn start(
        size: PoolSize,
        metrics: Arc<Metrics>,
        init: impl Fn() -> S + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(size.workers > 0, "a pool needs at least one worker");
        let (jobs, queue) = crossbeam_channel::bounded(size.queue);
        let init = Arc::new(init);
        for index in 0..size.workers {
            let (queue, metrics, init) = (queue.clone(), Arc::clone(&metrics), Arc::clone(&init));
            thread::Builder::new()
                .name(format!("hash-worker-{index}"))
                .spawn(move || {
                    lower_priority(size.nice);
                    let mut state = init();
                    work(&queue, &metrics, &mut state);
                })
                .context("starting a password hashing thread")?;
        }
        Ok(Self { jobs, metrics })
    }

    /// Runs `job` on a worker and returns its result; RESOURCE_EXHAUSTED at once when the
    /// queue is full. Dropping the returned future abandons the job if it has not started.
    pub async fn run<T, F>(&self, job: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce(&mut S) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let call = Box::new(Call {
            job,
            reply,
            state: PhantomData,
        });
        match self.jobs.try_send(call) {
            Ok(()) => self
                .metrics
                .hash_jobs_queued
                .increment_to(self.jobs.len() as u64),
            Err(TrySendError::Full(_)) => {
                self.metrics.hash_jobs_rejected.increment();
                return Err(AuthError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(anyhow::anyhow!("the password hashing threads have stopped").into());
            }
        }
        let result = answer.await.context("a password hashing job panicked")?;
        Ok(result?)
    }
}

/// A worker's life: take the next job, skip it if nobody waits for it any more, else run it.
fn work<S>(queue: &Receiver<Box<dyn Job<S>>>, metrics: &Metrics, state: &mut S) {
    while let Ok(job) = queue.recv() {
        metrics.hash_jobs_queued.decrement();
        if job.abandoned() {
            metrics.hash_jobs_skipped.increment();
            continue;
        }
        metrics.hash_jobs_running.increment();
        // A panic drops the job's reply (its caller gets an internal error) but not the thread.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(state)));
        metrics.hash_jobs_running.decrement();
        if outcome.is_err() {
            tracing::error!("a password hashing job panicked");
        }
    }
}

/// A job as the worker sees it, whatever it returns.
trait Job<S>: Send {
    /// The caller has gone (its future was dropped): running the job would be wasted work.
    fn abandoned(&self) -> bool;
    /// Runs the job and hands its result to the caller.
    fn run(self: Box<Self>, state: &mut S);
}

struct Call<S, T, F> {
    job: F,
    reply: oneshot::Sender<anyhow::Result<T>>,
    state: PhantomData<fn(&mut S)>,
}

impl<S, T, F> Job<S> for Call<S, T, F>
where
    T: Send,
    F: FnOnce(&mut S) -> anyhow::Result<T> + Send,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(self: Box<Self>, state: &mut S) {
        let Self { job, reply, .. } = *self;
        // The caller may have gone while the job ran: the result is simply dropped.
        let _ = reply.send(job(state));
    }
}

/// Lowers the calling thread's scheduling priority by `by` nice levels. On Linux nice is
/// per thread, so the gRPC runtime keeps its priority and wins the CPU from a login flood.
/// It does not reach other processes (the kernel's autogroups weigh processes by session):
/// the README says how to weight the whole service.
fn lower_priority(by: i32) {
    if by <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let thread = Some(rustix::thread::gettid());
        let lowered = getpriority_process(thread)
            .and_then(|nice| setpriority_process(thread, nice.saturating_add(by).min(19)));
        if let Err(error) = lowered {
            tracing::warn!(%error, "could not lower a password hashing thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;

    fn pool(workers: usize, queue: usize, nice: i32) -> (Pool<()>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let size = PoolSize {
            workers,
            queue,
            nice,
        };
        (
            Pool::start(size, Arc::clone(&metrics), || ()).unwrap(),
            metrics,
        )
    }

    /// Occupies a worker until the returned sender is dropped or sent to.
    async fn occupy(pool: &Arc<Pool<()>>) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, released) = mpsc::channel::<()>();
        let (started, is_started) = oneshot::channel();
        let pool = Arc::clone(pool);
        let task = tokio::spawn(async move {
            pool.run(move |()| {
                let _ = started.send(());
                let _ = released.recv();
                Ok(())
            })
            .await
            .unwrap();
        });
        is_started.await.unwrap();
        (release, task)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_counts_it() {
        let (pool, metrics) = pool(1, 1, 0);
        let pool = Arc::new(pool);
        let (release, busy) = occupy(&pool).await;
        let queued = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.run(|()| Ok(7)).await.unwrap() }
        });
        while metrics.hash_jobs_queued.get() == 0 {
            tokio::task::yield_now().await;
        }

        let refused = pool.run(|()| Ok(8)).await;

        assert!(matches!(refused, Err(AuthError::Overloaded)));
        assert_eq!(metrics.hash_jobs_rejected.get(), 1);
        drop(release);
        busy.await.unwrap();
        assert_eq!(queued.await.unwrap(), 7);
        assert_eq!(metrics.hash_jobs_running.peak(), 1);
    }

    #[tokio::test]
    async fn a_queued_job_whose_caller_has_gone_never_runs() {
        let (pool, metrics) = pool(1, 4, 0);
        let pool = Arc::new(pool);
        let (release, busy) = occupy(&pool).await;
        let (ran, has_run) = mpsc::channel::<()>();
        let abandoned = pool.run(move |()| {
            let _ = ran.send(());
            Ok(())
        });
        // Queue it, then go away, as tonic does when a call's deadline passes.
        let abandoned = tokio::time::timeout(Duration::from_millis(1), abandoned).await;
        assert!(abandoned.is_err(), "it was queued behind the busy worker");

        drop(release);
        busy.await.unwrap();
        pool.run(|()| Ok(())).await.unwrap();

        assert_eq!(metrics.hash_jobs_skipped.get(), 1);
        assert!(has_run.try_recv().is_err(), "the abandoned job ran");
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_caller_but_not_the_worker() {
        let (pool, _metrics) = pool(1, 1, 0);
        let failed = pool
            .run(|()| -> anyhow::Result<()> { panic!("boom") })
            .await;
        assert!(matches!(failed, Err(AuthError::Internal(_))));
        assert_eq!(pool.run(|()| Ok(1)).await.unwrap(), 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn workers_run_at_a_lower_priority_than_the_thread_that_started_them() {
        let nice_of = |tid: i32| {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            // Fields after the parenthesised name: state is field 3, nice field 19.
            let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
            fields[16].parse::<i32>().unwrap()
        };
        let mine = nice_of(rustix::thread::gettid().as_raw_nonzero().get());
        let (pool, _metrics) = pool(1, 1, 5);

        let worker = pool
            .run(|()| Ok(rustix::thread::gettid().as_raw_nonzero().get()))
            .await
            .unwrap();

        assert_eq!(nice_of(worker), (mine + 5).min(19));
    }
}
