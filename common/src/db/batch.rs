//! Calls that run one statement for many callers at once.
//!
//! On PostgreSQL every statement is a round trip: the calling thread hands the work to a
//! blocking thread, which wakes a server process and sleeps until it answers. Under load most of
//! the CPU of a one-statement call went to those hand-offs and wake-ups (docs/benchmarks.md),
//! not to the statement. A [`Batcher`] queues the calls and runs the ones waiting as one batch,
//! one statement for all of them, answering each caller with its own outcome: the hand-offs
//! are paid once per batch. One batch runs at a time; the calls that arrive meanwhile form the
//! next, so an idle system answers one call after one round trip and a busy one batches.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Db, DbCause, DbConnection, DbError};

/// Calls waiting beyond this many are held back by their callers (backpressure).
const QUEUE: usize = 4096;

struct Waiting<I, O> {
    input: I,
    answer: oneshot::Sender<Result<O, DbError>>,
}

/// A queue of calls run in batches by one task (see the module doc).
#[derive(Debug)]
pub struct Batcher<I, O> {
    queue: mpsc::Sender<Waiting<I, O>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the batching task on the current tokio runtime. `run` gets at most `max_batch`
    /// inputs in arrival order and answers one output per input, in the same order; if it fails,
    /// every call of the batch gets its error.
    pub fn start<F>(db: Db, max_batch: usize, run: F) -> Self
    where
        F: Fn(&mut DbConnection, Vec<I>) -> Result<Vec<O>, DbError> + Send + Sync + 'static,
    {
        let (queue, mut waiting) = mpsc::channel::<Waiting<I, O>>(QUEUE);
        let run = Arc::new(run);
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while batch.len() < max_batch.max(1) {
                    match waiting.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (inputs, answers): (Vec<I>, Vec<_>) = batch.into_iter().map(|w| (w.input, w.answer)).unzip();
                let run = run.clone();
                let calls = inputs.len();
                match db.run(move |conn| run(conn, inputs)).await {
                    Ok(outputs) if outputs.len() == calls => {
                        for (answer, output) in answers.into_iter().zip(outputs) {
                            // A caller that stopped waiting is not told; the batch still ran.
                            let _ = answer.send(Ok(output));
                        }
                    }
                    Ok(outputs) => {
                        let error = DbError::Query(DbCause::from(format!(
                            "a batch of {calls} calls answered {}",
                            outputs.len()
                        )));
                        for answer in answers {
                            let _ = answer.send(Err(error.clone()));
                        }
                    }
                    Err(error) => {
                        for answer in answers {
                            let _ = answer.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues `input` and waits for its output.
    pub async fn call(&self, input: I) -> Result<O, DbError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting { input, answer })
            .await
            .map_err(|_| DbError::Unavailable(DbCause::from("the batching task has stopped")))?;
        answered.await.map_err(|_| DbError::Query(DbCause::from("the batching task dropped a call")))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::db::PoolOptions;

    fn sqlite_db(dir: &tempfile::TempDir) -> Db {
        Db::connect(&format!("sqlite://{}", dir.path().join("batch.db").display()), &PoolOptions::default()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_calls_run_together_and_each_gets_its_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(&dir);
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = Arc::new(Batcher::start(db, 16, move |conn, inputs: Vec<i64>| {
            counted.fetch_add(1, Relaxed);
            // Slow enough that the other calls queue behind the first batch.
            conn.batch_execute("SELECT 1").map_err(DbError::from)?;
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(inputs.into_iter().map(|n| if n == 13 { Err("unlucky") } else { Ok(n * 2) }).collect())
        }));
        let calls: Vec<_> = (0..100)
            .map(|n| {
                let doubler = doubler.clone();
                tokio::spawn(async move { (n, doubler.call(n).await.unwrap()) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.unwrap();
            assert_eq!(answer, if n == 13 { Err("unlucky") } else { Ok(n * 2) }, "call {n}");
        }
        let batches = batches.load(Relaxed);
        assert!((100usize.div_ceil(16)..100).contains(&batches), "100 calls in {batches} batches");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_calls_and_the_next_batch_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(&dir);
        let batcher = Batcher::start(db, 8, |conn, inputs: Vec<&'static str>| {
            if inputs.contains(&"bad") {
                conn.batch_execute("SELECT * FROM no_such_table")?;
            }
            if inputs.contains(&"panic") {
                panic!("a bug in the batch");
            }
            Ok(inputs)
        });
        assert!(matches!(batcher.call("bad").await, Err(DbError::Query(_))));
        assert!(matches!(batcher.call("panic").await, Err(DbError::Query(_))));
        assert_eq!(batcher.call("good").await.unwrap(), "good");
    }
}
