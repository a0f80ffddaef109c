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
    /// How the threads are scheduled against the rest of the host.
    pub priority: Priority,
}

/// The Linux scheduling policy of the hashing threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HashSched {
    /// `SCHED_IDLE`: a hash runs only on a core no other thread of the host wants, and any
    /// waking thread preempts it at once, whatever process or session it belongs to.
    #[default]
    Idle,
    /// `SCHED_BATCH` at the nice offset: fewer wake-up preemptions of others, weighed as usual.
    Batch,
    /// The default policy at the nice offset: ranks the threads inside this process only.
    Normal,
}

/// How the hashing threads run against the rest of the process and the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Priority {
    /// Their scheduling policy.
    pub sched: HashSched,
    /// Nice levels below the thread that starts them (0 = same; ignored by `SCHED_IDLE`).
    pub nice: i32,
}

impl Priority {
    /// What the rest of the process runs at.
    pub const SAME: Self = Self {
        sched: HashSched::Normal,
        nice: 0,
    };
}

/// Worker threads, each holding its own state `S` (its argon2 memory) for its whole life.
/// They stop once every handle to the pool is dropped and the queue is drained.
pub struct Pool<S> {
    jobs: Sender<Box<dyn Job<S>>>,
    metrics: Arc<Metrics>,
}

impl<S: 'static> Pool<S> {
    /// Starts `size.workers` threads named `hash-worker-N`; each builds its state with `init`
    /// on its own thread, after lowering its priority to `size.priority`.
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
                    lower_priority(size.priority);
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

/// Lowers the calling thread's scheduling priority. On Linux policy and nice are per thread,
/// so the gRPC runtime keeps its priority and wins the CPU from a login flood. Nice alone does
/// not reach other processes (the kernel's autogroups and cgroups weigh them as groups first);
/// `SCHED_IDLE` does: a waking thread of any process preempts an idle-policy one. Failing to
/// lower it is logged, not fatal.
fn lower_priority(priority: Priority) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        if let Err(error) = set_policy(priority.sched) {
            tracing::warn!(%error, sched = ?priority.sched, "could not set a password hashing thread's policy");
        }
        if priority.nice <= 0 {
            return;
        }
        let thread = Some(rustix::thread::gettid());
        let lowered = getpriority_process(thread).and_then(|nice| {
            setpriority_process(thread, nice.saturating_add(priority.nice).min(19))
        });
        if let Err(error) = lowered {
            tracing::warn!(%error, "could not lower a password hashing thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

/// Sets the calling thread's scheduling policy (rustix has no `sched_setscheduler`). Lowering
/// it needs no privilege.
#[cfg(target_os = "linux")]
fn set_policy(sched: HashSched) -> std::io::Result<()> {
    let policy = match sched {
        HashSched::Idle => libc::SCHED_IDLE,
        HashSched::Batch => libc::SCHED_BATCH,
        HashSched::Normal => return Ok(()),
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread, and `param` is a valid `sched_param` that
    // outlives the call, which only reads it.
    let set = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;

    fn pool(workers: usize, queue: usize, priority: Priority) -> (Pool<()>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let size = PoolSize {
            workers,
            queue,
            priority,
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
        let (pool, metrics) = pool(1, 1, Priority::SAME);
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
        let (pool, metrics) = pool(1, 4, Priority::SAME);
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
        let (pool, _metrics) = pool(1, 1, Priority::SAME);
        let failed = pool
            .run(|()| -> anyhow::Result<()> { panic!("boom") })
            .await;
        assert!(matches!(failed, Err(AuthError::Internal(_))));
        assert_eq!(pool.run(|()| Ok(1)).await.unwrap(), 1);
    }

    /// Fields of a thread's `/proc` stat line after the parenthesised name (state first).
    #[cfg(target_os = "linux")]
    fn stat_of(tid: i32) -> Vec<String> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields = stat.rsplit_once(") ").unwrap().1;
        fields.split(' ').map(str::to_owned).collect()
    }

    #[cfg(target_os = "linux")]
    fn my_tid() -> i32 {
        rustix::thread::gettid().as_raw_nonzero().get()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn workers_run_at_a_lower_priority_than_the_thread_that_started_them() {
        // Field 19 is nice, field 41 the scheduling policy.
        let nice_of = |tid| stat_of(tid)[16].parse::<i32>().unwrap();
        let policy_of = |tid| stat_of(tid)[38].parse::<i32>().unwrap();
        let mine = nice_of(my_tid());
        let cases = [
            (HashSched::Normal, libc::SCHED_OTHER),
            (HashSched::Batch, libc::SCHED_BATCH),
            (HashSched::Idle, libc::SCHED_IDLE),
        ];
        for (sched, policy) in cases {
            let (pool, _metrics) = pool(1, 1, Priority { sched, nice: 5 });

            let worker = pool.run(|()| Ok(my_tid())).await.unwrap();

            assert_eq!(policy_of(worker), policy, "{sched:?}");
            assert_eq!(nice_of(worker), (mine + 5).min(19), "{sched:?}");
        }
        assert_eq!(
            policy_of(my_tid()),
            libc::SCHED_OTHER,
            "the caller keeps its own"
        );
    }
}
