//! The emitted Slurm job array run by a real Slurm: a single-node
//! `slurmctld` + `slurmd` (with `munged`) started on localhost in a scratch
//! folder, the sweep's array submitted with `sbatch`, its shards merged and
//! compared with the unsharded run byte for byte. Needs Debian's
//! `slurm-wlm` and `munge` (`.ci/run` installs them) and root; skipped, with
//! a message saying so, where they are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{moesim, scratch, stderr};
use crate::sweep_files::{files, QUICK_SWEEP};

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Daemons started by the test, stopped (by their own ids) when it ends,
/// pass or fail.
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool, logs: &Path) {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > limit {
            let mut text = String::new();
            for log in ["munged.log", "slurmctld.log", "slurmd.log"] {
                text += &format!("--- {log}\n{}\n", std::fs::read_to_string(logs.join(log)).unwrap_or_default());
            }
            panic!("{what}: not within {limit:?}\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn slurm_runs_the_emitted_job_array_and_the_merge_is_the_unsharded_run() {
    let tools = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"];
    let found: Vec<Option<PathBuf>> = tools.iter().map(|t| find(t)).collect();
    if found.iter().any(Option::is_none) {
        let missing: Vec<&str> = tools.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(t, _)| *t).collect();
        eprintln!(
            "SKIPPED slurm_runs_the_emitted_job_array...: {} not installed (apt-get install slurm-wlm munge; .ci/run does)",
            missing.join(", ")
        );
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED slurm_runs_the_emitted_job_array...: slurmd needs root (CI runs as root)");
        return;
    }
    let bin = |i: usize| found[i].clone().unwrap();
    let dir = scratch("slurm_array");
    for d in ["state", "spool"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    // A munge key of our own.
    let key = dir.join("munge.key");
    let mut bytes = vec![0u8; 1024];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    std::fs::write(&key, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    let d = dir.display();
    let conf = dir.join("slurm.conf");
    std::fs::write(dir.join("plugstack.conf"), "").unwrap();
    std::fs::write(
        &conf,
        format!(
            "ClusterName=moesimtest\nSlurmctldHost=localhost(127.0.0.1)\nAuthType=auth/munge\nAuthInfo=socket={d}/munge.sock\n\
             CredType=cred/munge\nSlurmUser=root\nSlurmdUser=root\nSlurmctldPort={}\nSlurmdPort={}\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\nSlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSwitchType=switch/none\nMpiDefault=none\n\
             SchedulerType=sched/builtin\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
             SlurmdParameters=config_overrides\nReturnToService=2\nJobCompType=jobcomp/none\n\
             AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n\
             PlugStackConfig={d}/plugstack.conf\n\
             NodeName=localhost NodeAddr=127.0.0.1 CPUs=1 RealMemory=100 State=UNKNOWN\n\
             PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let spawn = |program: PathBuf, args: Vec<String>, log: &str| -> Child {
        Command::new(program)
            .args(args)
            .env("SLURM_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{log}.out"))).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut daemons = Daemons(Vec::new());
    let sock = dir.join("munge.sock");
    daemons.0.push(spawn(
        bin(0),
        vec![
            "-F".into(),
            "--force".into(),
            format!("--key-file={}", key.display()),
            format!("--socket={}", sock.display()),
            format!("--pid-file={d}/munged.pid"),
            format!("--log-file={d}/munged.log"),
            format!("--seed-file={d}/munged.seed"),
        ],
        "munged",
    ));
    wait_for("munged's socket", Duration::from_secs(30), || sock.exists(), &dir);
    daemons.0.push(spawn(bin(1), vec!["-D".into(), "-f".into(), conf.display().to_string()], "slurmctld"));
    daemons.0.push(spawn(
        bin(2),
        vec!["-D".into(), "-N".into(), "localhost".into(), "-f".into(), conf.display().to_string()],
        "slurmd",
    ));
    let client = |i: usize, args: &[&str]| {
        Command::new(bin(i)).args(args).env("SLURM_CONF", &conf).current_dir(&dir).output().unwrap()
    };
    wait_for(
        "the node idle",
        Duration::from_secs(60),
        || String::from_utf8_lossy(&client(5, &["-h", "-o", "%t"]).stdout).trim() == "idle",
        &dir,
    );

    // The sweep: six quick points in four array tasks.
    let file = dir.join("quick.toml");
    std::fs::write(&file, QUICK_SWEEP).unwrap();
    let f = file.to_str().unwrap();
    let out = dir.join("o");
    let o = moesim(&["sweep", f, "--emit", "slurm", "--shards", "4", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = dir.join("array.sh");
    std::fs::write(&script, &o.stdout).unwrap();
    let sub = client(3, &["--parsable", script.to_str().unwrap()]);
    assert!(sub.status.success(), "sbatch: {}", stderr(&sub));
    let job = String::from_utf8_lossy(&sub.stdout).trim().split(';').next().unwrap().to_owned();
    wait_for(
        "the job array to finish",
        Duration::from_secs(300),
        || {
            let q = client(4, &["-h", "-j", &job]);
            q.status.success() && q.stdout.is_empty()
        },
        &dir,
    );
    let shards: Vec<String> = (0..4).map(|i| out.join(format!("shard-{i}")).display().to_string()).collect();
    for (i, s) in shards.iter().enumerate() {
        let log = std::fs::read_to_string(dir.join(format!("slurm-{job}_{i}.out"))).unwrap_or_default();
        assert!(Path::new(s).join("results.jsonl").exists(), "task {i} wrote no results; its log:\n{log}");
    }
    let merged = out.join("merged");
    let mut args = vec!["merge"];
    args.extend(shards.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = moesim(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let whole = dir.join("whole");
    let o = moesim(&["sweep", f, "--out", whole.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files(&merged), files(&whole));
    drop(daemons);
}
