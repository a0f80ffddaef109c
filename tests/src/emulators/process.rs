//! One launch of an emulator process: a watchdog shell that dies with the test process,
//! threads draining its output, and the "listening" line that says it is up.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::sync::mpsc;

/// Longest an emulator may take to listen (moto needs ~1.5 s idle, more on a loaded machine).
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running emulator under its watchdog shell.
#[derive(Debug)]
pub(super) struct Process {
    child: Child,
    /// Ports the output-draining threads saw it listen on; closed when both pipes are.
    listening: mpsc::UnboundedReceiver<u16>,
}

impl Process {
    /// Runs `command` (built with [`watched`]) and waits until it says it listens on `port`:
    /// `None` if it exited first (most likely the port was taken).
    pub(super) async fn launch(mut command: Command, name: &str, port: u16) -> Option<Self> {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let (sender, listening) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        drain(stdout, name, sender.clone());
        drain(stderr, name, sender);
        let mut process = Self { child, listening };
        match tokio::time::timeout(START_LIMIT, process.listening.recv()).await {
            Ok(Some(listening)) => {
                assert_eq!(listening, port, "{name} listens elsewhere");
                Some(process)
            }
            // Both pipes closed: it exited without listening.
            Ok(None) => {
                process.kill();
                None
            }
            Err(_) => {
                process.kill();
                panic!("{name} did not listen on port {port} within {START_LIMIT:?}");
            }
        }
    }

    /// Kills the watchdog shell's whole process group (the emulator with it) and reaps the
    /// shell, which a SIGKILL makes immediate.
    pub(super) fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and waits until the emulator itself is gone: it holds the output pipes, so
    /// they close only then, not when the shell dies. False if that takes over 10 s.
    pub(super) async fn kill_and_wait(mut self) -> bool {
        self.kill();
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.listening.recv().await.is_some() {}
        })
        .await
        .is_ok()
    }

    /// The watchdog shell's pid, which is also its process group's id.
    pub(super) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Signals the process group the watchdog shell leads.
    pub(super) fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

/// A command run under a tiny shell watchdog: it starts the program, then blocks reading its
/// stdin (a pipe from this process) and kills the program when that pipe closes, i.e. when
/// the test process exits, however it exits. The shell exits with the program, so its
/// output pipes close when the program dies.
pub(super) fn watched(program: PathBuf) -> Command {
    let script = r#"
        exec 3<&0
        "$@" </dev/null 3<&- & child=$!
        ( read -r _ignored <&3; kill -9 "$child" ) >/dev/null 2>&1 & watcher=$!
        wait "$child"; status=$?
        kill "$watcher" 2>/dev/null
        exit "$status"
    "#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Reads an emulator's output on its own thread until the pipe closes (so the emulator never
/// blocks on a full pipe), reporting the line that says it listens; echoed with `TEST_LOG`.
fn drain(stream: impl Read + Send + 'static, name: &str, listening: mpsc::UnboundedSender<u16>) {
    let echo = std::env::var_os("TEST_LOG").is_some();
    let name = name.to_owned();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            let text = String::from_utf8_lossy(&line);
            if echo {
                eprint!("[{name}] {text}");
            }
            if let Some(port) = listening_port(&text) {
                let _ = listening.send(port);
            }
            line.clear();
        }
    });
}

/// The port in dynalite's "Dynalite listening at: http://127.0.0.1:PORT" or werkzeug's
/// (moto's) " * Running on http://127.0.0.1:PORT".
fn listening_port(line: &str) -> Option<u16> {
    if !(line.contains("listening at") || line.contains("Running on")) {
        return None;
    }
    let (_, rest) = line.split_once("http://127.0.0.1:")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_lines_of_both_emulators_give_their_port() {
        assert_eq!(
            listening_port("Dynalite listening at: http://127.0.0.1:21234\n"),
            Some(21234)
        );
        assert_eq!(
            listening_port(" * Running on http://127.0.0.1:38913\n"),
            Some(38913)
        );
        assert_eq!(
            listening_port("127.0.0.1 - - \"GET / HTTP/1.1\" 200 -"),
            None
        );
    }
}
