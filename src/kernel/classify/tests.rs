//! Grouping, serialisation and robustness of the classifier as a whole; each message
//! family's own shapes are tested in its file.

use super::*;
use proptest::prelude::*;

pub(super) fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// Verdict of one line fed to a fresh classifier.
pub(super) fn verdict(line: &str) -> LineVerdict {
    Classifier::new().feed(line, None)
}

/// Feeds all lines (no timestamps), flushes, returns verdicts and events.
pub(super) fn run(lines: &[&str]) -> (Vec<LineVerdict>, Vec<Event>) {
    run_ts(&lines.iter().map(|l| (*l, None)).collect::<Vec<_>>())
}

pub(super) fn run_ts(lines: &[(&str, Option<u64>)]) -> (Vec<LineVerdict>, Vec<Event>) {
    let mut c = Classifier::new();
    let mut verdicts = Vec::new();
    let mut events = Vec::new();
    for (line, ts) in lines {
        verdicts.push(c.feed(line, *ts));
        events.extend(std::iter::from_fn(|| c.pop_event()));
    }
    c.flush();
    events.extend(std::iter::from_fn(|| c.pop_event()));
    (verdicts, events)
}

pub(super) fn assert_head(line: &str, kind: EventKind, fields: Fields) {
    let v = verdict(line);
    assert_eq!(v.kind, Some(kind), "kind of {line:?}");
    assert!(!v.continuation, "{line:?} is a head");
    assert_eq!(v.fields, fields, "fields of {line:?}");
}

pub(super) fn rcu(flavor: &str, expedited: bool, self_detected: bool) -> Fields {
    Fields {
        flavor: s(flavor),
        expedited: Some(expedited),
        self_detected: Some(self_detected),
        ..Fields::default()
    }
}

pub(super) const ID: &str = "8b2f0c4e5d6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";

#[test]
fn look_alike_lines_are_not_faults() {
    let negatives = [
        "rcu: Hierarchical RCU implementation.",
        "rcu: Preemptible hierarchical RCU implementation.",
        "rcu: \tRCU restricting CPUs from NR_CPUS=256 to nr_cpu_ids=4.",
        "rcu: \tRCU event tracing is enabled.",
        "rcu: \tRCU dyntick-idle grace-period acceleration is enabled.",
        "rcu: RCU calculated value of scheduler-enlistment delay is 25 jiffies.",
        "rcu: Adjusting geometry for rcu_fanout_leaf=16, nr_cpu_ids=4",
        "rcu: srcu_init: Setting srcu_struct sizes based on contention.",
        "rcu: \tTrampoline variant of Tasks RCU enabled.",
        "RCU Tasks: Setting shift to 2 and lim to 1 rcu_task_cb_adjust=1.",
        "RCU Tasks Trace: Setting shift to 2 and lim to 1 rcu_task_cb_adjust=1 rcu_task_cpu_ids=4.",
        "rcu_tasks_wait_gp: rcu_tasks grace period number 85 (since boot) is 40793 jiffies old.",
        "INFO: NMI handler (perf_event_nmi_handler) took too long to run: 1.234 msecs",
        "INFO: task_struct is 4096 bytes",
        "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
        "kernel.hung_task_timeout_secs = 120",
        "NMI watchdog: Enabled. Permanently consumes one hw-PMU counter.",
        "NMI watchdog: Perf NMI watchdog permanently disabled",
        "NMI watchdog: Shutting down hard lockup detector on all cpus",
        "watchdog: Disabling watchdog on nohz_full cores by default",
        "watchdog: Delayed init of the lockup detector failed: -19",
        "workqueue: blk_mq_run_work_fn hogged CPU for >10000us 4 times, consider switching to WQ_UNBOUND",
        "bcm2835-wdt bcm2835-wdt: Broadcom BCM2835 watchdog timer",
        "NFS: Registering the id_resolver key type",
        "RPC: Registered tcp transport module.",
        "nfs: server nas.local is a teapot",
        "myapp: server db not responding, still trying",
        "Out of memory and no killable processes...",
        "memory: usage 524288kB, limit 524288kB, failcnt 1234",
        "Memory cgroup stats for /kubepods:",
        "oom_reaper: started",
        "BUG: scheduling while atomic: swapper/0/0/0x00000002",
        "CPU: 2 PID: 0 Comm: swapper/2 Not tainted 6.17.0-1004-raspi #4-Ubuntu",
        "Call trace:",
        " __switch_to+0xe8/0x168",
        "(detected by 2, t=5252 jiffies, g=185293, q=433 ncpus=4)",
        "systemd[1]: k3s.service: Killing process 1234 (containerd-shim) with signal SIGKILL.",
        "failed to reserve sandbox name",
        "level=info msg=\"reserve sandbox name ok\"",
        "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
        "",
    ];
    for line in negatives {
        let v = verdict(line);
        assert_eq!(v, LineVerdict::none(), "{line:?} must not match");
    }
}

pub(super) const RCU_SPLAT: &[&str] = &[
    "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    "rcu: \t2-...!: (1 GPs behind) idle=8c4c/1/0x4000000000000000 softirq=12345/12346 fqs=0",
    "rcu: \t(detected by 0, t=5252 jiffies, g=185293, q=433 ncpus=4)",
    "Task dump for CPU 2:",
    "task:runc:[2:INIT]   state:R  running task     stack:0     pid:4321  tgid:4321  ppid:4300   flags:0x0000000a",
    "Call trace:",
    " __switch_to+0xe8/0x168",
    " 0xffff00004fb5e100",
    "rcu: rcu_preempt kthread starved for 5254 jiffies! g185293 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402 ->cpu=2",
    "rcu: \tUnless rcu_preempt kthread gets sufficient CPU time, OOM is now expected behavior.",
    "rcu: RCU grace-period kthread stack dump:",
    "task:rcu_preempt     state:I stack:0     pid:15    tgid:15    ppid:2      flags:0x00000008",
    "Call trace:",
    " __switch_to+0xe8/0x168",
    " __schedule+0x37c/0xd68",
    " schedule+0x64/0x108",
    "rcu: Stack dump where RCU GP kthread last ran:",
    "Sending NMI from CPU 0 to CPUs 2:",
    "NMI backtrace for cpu 2",
    "CPU: 2 PID: 4321 Comm: runc:[2:INIT] Not tainted 6.17.0-1004-raspi #4-Ubuntu",
    "Hardware name: Raspberry Pi 5 Model B Rev 1.0 (DT)",
    "pstate: 60400009 (nZCv daif +PAN -UAO -TCO -DIT -SSBS BTYPE=--)",
    "pc : queued_spin_lock_slowpath+0x1c8/0x388",
    "lr : _raw_spin_lock+0x70/0x88",
    "sp : ffff8000851f3a10",
    "x29: ffff8000851f3a10 x28: ffff000102b4c000 x27: 0000000000000000",
    "x2 : 0000000000000000 x1 : ffff000102b4c000 x0 : 0000000000000001",
    "Call trace:",
    " queued_spin_lock_slowpath+0x1c8/0x388",
    " veth_newlink+0x1a4/0x3f0 [veth]",
];

#[test]
fn event_is_complete_only_when_the_splat_ends() {
    let mut c = Classifier::new();
    for line in RCU_SPLAT {
        c.feed(line, None);
        assert_eq!(c.pop_event(), None);
    }
    assert_eq!(c.open_event().map(|e| e.kind), Some(EventKind::RcuStall));
    c.flush();
    assert_eq!(c.open_event(), None);
    assert_eq!(c.pop_event().map(|e| e.lines), Some(RCU_SPLAT.len() as u32));
    assert_eq!(c.pop_event(), None);
}

#[test]
fn x86_hard_lockup_with_registers_and_panic() {
    let lines = [
        "NMI watchdog: Watchdog detected hard LOCKUP on cpu 2",
        "Modules linked in: overlay br_netfilter",
        "CPU: 2 UID: 0 PID: 0 Comm: swapper/2 Not tainted 6.12.0 #1",
        "RIP: 0010:native_queued_spin_lock_slowpath+0x5e/0x2d0",
        "Code: 6d f0 0f ba 2f 08 0f 92 c0 0f b6 c0 c1 e0 08 89 c2 8b 07 30 e4 09 d0 a9 00 01 ff ff",
        "RSP: 0018:ffffc90000003e48 EFLAGS: 00000002",
        "RAX: 0000000000000101 RBX: ffff888100a3c000 RCX: 0000000000000000",
        "FS:  0000000000000000(0000) GS:ffff88813bd00000(0000) knlGS:0000000000000000",
        "CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033",
        "Call Trace:",
        " <NMI>",
        " ? watchdog_hardlockup_check+0x1a2/0x1c0",
        " </NMI>",
        " <IRQ>",
        " _raw_spin_lock+0x29/0x30",
        " </IRQ>",
        "Kernel panic - not syncing: Hard LOCKUP",
    ];
    let (verdicts, events) = run(&lines);
    for (v, line) in verdicts[1..].iter().zip(&lines[1..]) {
        assert!(v.continuation, "{line:?}");
    }
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].fields,
        Fields {
            cpu: Some(2),
            panic: Some(true),
            ..Fields::default()
        }
    );
}

pub(super) const OOM_SPLAT: &[&str] = &[
    "java invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=937",
    "CPU: 1 PID: 99 Comm: java Not tainted 6.17.0-1004-raspi #4-Ubuntu",
    "Hardware name: Raspberry Pi 5 Model B Rev 1.0 (DT)",
    "Call trace:",
    " show_stack+0x20/0x38",
    " oom_kill_process+0x124/0x2d8",
    "memory: usage 524288kB, limit 524288kB, failcnt 1234",
    "swap: usage 0kB, limit 9007199254740988kB, failcnt 0",
    "Memory cgroup stats for /kubepods/burstable/pod5f1d/ab12:",
    "anon 530210816",
    "file 4096",
    "",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[     99]     0    99   912345   129000  1400000        0           937 java",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-ab12.scope,mems_allowed=0,oom_memcg=/kubepods/burstable/pod5f1d/ab12,task_memcg=/kubepods/burstable/pod5f1d/ab12,task=java,pid=99,uid=0",
    "Memory cgroup out of memory: Killed process 99 (java) total-vm:3649380kB, anon-rss:516000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1368kB oom_score_adj:937",
    "oom_reaper: reaped process 99 (java), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
];

#[test]
fn one_line_events_inside_a_splat_leave_it_open() {
    let (verdicts, events) = run(&[
        RCU_SPLAT[0],
        RCU_SPLAT[1],
        "nfs: server nas.local not responding, still trying",
        RCU_SPLAT[2],
    ]);
    assert!(!verdicts[2].continuation);
    assert!(verdicts[3].continuation);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::NfsNotResponding, EventKind::RcuStall]
    );
    assert_eq!(events[1].fields.jiffies, Some(5252));
    assert_eq!(events[1].lines, 3);
}

#[test]
fn unrelated_line_ends_the_splat_and_later_trace_lines_are_not_claimed() {
    let (verdicts, events) = run(&[
        "INFO: task mkdir:1 blocked for more than 5 seconds.",
        "Call Trace:",
        "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
        "Call Trace:",
        " foo+0x1/0x2",
    ]);
    assert!(verdicts[1].continuation);
    for v in &verdicts[2..] {
        assert_eq!(v, &LineVerdict::none());
    }
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].lines, 2);
}

#[test]
fn timestamp_gap_or_time_going_back_splits_splats() {
    let (verdicts, events) = run_ts(&[
        (
            "INFO: task a:1 blocked for more than 5 seconds.",
            Some(100_000_000),
        ),
        ("Call Trace:", Some(100_000_100)),
        (
            " schedule+0x1/0x2",
            Some(100_000_100 + SPLAT_MAX_GAP_USEC + 1),
        ),
        (
            "INFO: task b:2 blocked for more than 5 seconds.",
            Some(200_000_000),
        ),
        ("Call Trace:", Some(5)),
    ]);
    assert!(verdicts[1].continuation);
    assert_eq!(verdicts[2], LineVerdict::none());
    assert_eq!(verdicts[4], LineVerdict::none());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].first_ts_usec, Some(100_000_000));
    assert_eq!(events[0].last_ts_usec, Some(100_000_100));
    assert_eq!(events[0].lines, 2);
    assert_eq!(events[1].lines, 1);
}

#[test]
fn endless_splat_is_cut_at_the_line_limit() {
    let mut c = Classifier::new();
    c.feed("INFO: task a:1 blocked for more than 5 seconds.", None);
    let mut continued = 0;
    for _ in 0..SPLAT_MAX_LINES + 10 {
        if c.feed(" schedule+0x1/0x2", None).continuation {
            continued += 1;
        }
    }
    assert_eq!(continued, SPLAT_MAX_LINES - 1);
    assert_eq!(c.pop_event().map(|e| e.lines), Some(SPLAT_MAX_LINES));
    assert!(c.open_event().is_none());
}

#[test]
fn unfinished_oom_report_is_cut_at_the_line_limit() {
    let mut c = Classifier::new();
    c.feed(OOM_SPLAT[0], None);
    for _ in 0..SPLAT_MAX_LINES * 2 {
        c.feed("some line", None);
    }
    assert_eq!(c.pop_event().map(|e| e.lines), Some(SPLAT_MAX_LINES));
}

#[test]
fn verdicts_serialise_to_the_classify_json_shape() {
    let v = verdict(
        "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P1234 } 21 jiffies s: 1189 root: 0x1/.",
    );
    assert_eq!(
        serde_json::to_value(&v).unwrap(),
        serde_json::json!({
            "kind": "rcu_stall",
            "continuation": false,
            "flavor": "rcu_preempt",
            "expedited": true,
            "self_detected": false,
            "jiffies": 21,
            "pids": [1234]
        })
    );
    assert_eq!(
        serde_json::to_string(&verdict("eth0: up")).unwrap(),
        r#"{"kind":null,"continuation":false}"#
    );
    let v = verdict("nfs: server nas not responding, still trying");
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"kind":"nfs_not_responding","continuation":false,"rpc_program":"nfs","server":"nas","mount_kind":"hard"}"#
    );
}

#[test]
fn kind_names_match_their_serialised_form() {
    for kind in EventKind::ALL {
        assert_eq!(
            serde_json::to_value(kind).unwrap(),
            serde_json::Value::String(kind.as_str().to_string())
        );
    }
}

#[test]
fn hz_is_read_from_kernel_config() {
    let config = "#\n# Timer frequency\nCONFIG_HZ_250=y\n# CONFIG_HZ_1000 is not set\nCONFIG_HZ=250\nCONFIG_SCHED_HRTICK=y\n";
    assert_eq!(hz_from_kconfig(config), Some(250));
    assert_eq!(
        hz_from_kconfig("CONFIG_HZ_1000=y\nCONFIG_HZ=1000"),
        Some(1000)
    );
    assert_eq!(hz_from_kconfig("CONFIG_HZ_100=y\n"), None);
    assert_eq!(hz_from_kconfig("CONFIG_HZ=0\n"), None);
    assert_eq!(hz_from_kconfig("CONFIG_HZ=abc\n"), None);
    assert_eq!(hz_from_kconfig(""), None);
}

#[test]
fn jiffies_convert_with_hz() {
    assert_eq!(jiffies_to_secs(21, 1000), 0.021);
    assert_eq!(jiffies_to_secs(5250, 250), 21.0);
    assert_eq!(jiffies_to_secs(100, 0), 100.0);
}

/// Fragments of real messages, glued together to make near misses.
const VOCAB: &[&str] = &[
    "rcu: ",
    "INFO: ",
    "rcu_preempt ",
    "detected stalls on CPUs/tasks:",
    "detected expedited stalls on ",
    "self-detected stall on CPU",
    "{ ",
    "P12",
    " }",
    " 21 jiffies",
    "t=",
    "(detected by ",
    "jiffies",
    "INFO: task ",
    ":",
    "12",
    " blocked for more than ",
    " seconds.",
    "watchdog: ",
    "BUG: soft lockup - CPU#",
    " stuck for ",
    "s! [",
    "]",
    "Watchdog detected hard LOCKUP on cpu ",
    "nfs: server ",
    " not responding",
    " OK",
    "Out of memory: Killed process ",
    " (",
    ")",
    "oom-kill:",
    "task_memcg=",
    ",pid=",
    "Killed process ",
    "failed to reserve sandbox name ",
    "\\\"",
    "\"",
    "_",
    " is reserved for ",
    "Kernel panic - not syncing: ",
    "NFS: state manager",
    " failed on NFSv4 server ",
    " with error ",
    "lost ",
    " locks",
    "\t",
    " ",
    "-...!: (",
    "Call Trace:",
    "+0x1/0x2",
    "oom_reaper: reaped process ",
    "), now ",
    "BUG: workqueue lockup - pool cpus=",
    "0-",
    "é",
    "\u{0}",
    "xs_tcp: connect returned unhandled error ",
    "lockd: cannot monitor ",
];

fn vocab_line() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 0..12).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn classifier_never_panics_on_arbitrary_lines(
        lines in prop::collection::vec((any::<String>(), any::<Option<u64>>()), 0..20)
    ) {
        let mut c = Classifier::new();
        for (line, ts) in &lines {
            let _ = c.feed(line, *ts);
        }
        c.flush();
        while c.pop_event().is_some() {}
    }

    #[test]
    fn classifier_never_panics_on_near_miss_lines(
        lines in prop::collection::vec((vocab_line(), prop::option::of(0u64..1_000_000_000)), 0..30)
    ) {
        let mut c = Classifier::new();
        let mut heads = 0u32;
        let mut events = 0u32;
        for (line, ts) in &lines {
            let v = c.feed(line, *ts);
            if v.kind.is_some() && !v.continuation {
                heads += 1;
            }
            events += std::iter::from_fn(|| c.pop_event()).count() as u32;
        }
        c.flush();
        events += std::iter::from_fn(|| c.pop_event()).count() as u32;
        // Every head line yields exactly one event.
        prop_assert_eq!(heads, events);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_survived_after_lossy_decoding(
        bytes in prop::collection::vec(any::<u8>(), 0..200)
    ) {
        let mut c = Classifier::new();
        let _ = c.feed(&String::from_utf8_lossy(&bytes), None);
    }
}

/// Ordinary kernel lines, the bulk of any real log.
const ORDINARY: &[&str] = &[
    "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
    "IPv6: ADDRCONF(NETDEV_CHANGE): veth1a2b3c4d: link becomes ready",
    "cni0: port 3(veth1a2b3c4d) entered forwarding state",
    "cni0: port 3(veth1a2b3c4d) entered blocking state",
    "device veth1a2b3c4d entered promiscuous mode",
    "EXT4-fs (mmcblk0p2): mounted filesystem with ordered data mode. Quota mode: none.",
    "audit: type=1400 audit(1700000000.123:45): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"runc\" pid=1234 comm=\"apparmor_parser\"",
    "bcmgenet fd580000.ethernet eth0: Link is Up - 1Gbps/Full - flow control rx/tx",
    "flannel.1: Link UP",
    "overlayfs: idmapped layers are currently not supported",
    "Bluetooth: hci0: BCM: features 0x2f",
    "brcmfmac: brcmf_c_preinit_dcmds: Firmware: BCM4345/6 wl0: Nov  1 2021 00:37:25 version 7.45.241",
    "nf_conntrack: default automatic helper assignment has been turned off for security reasons",
    "rcu: Hierarchical RCU implementation.",
    "NFS: Registering the id_resolver key type",
    "systemd[1]: Started k3s.service - Lightweight Kubernetes.",
    "kauditd_printk_skb: 12 callbacks suppressed",
    "sd 0:0:0:0: [sda] 7814037168 512-byte logical blocks: (4.00 TB/3.64 TiB)",
    "xhci_hcd 0000:01:00.0: xHCI Host Controller",
    "vc4-drm gpu: [drm] Cannot find any crtc or sizes",
];

/// Run with `cargo test --release -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput_on_a_mixed_corpus() {
    let mut corpus: Vec<&str> = Vec::new();
    for i in 0..50 {
        corpus.extend_from_slice(ORDINARY);
        if i % 10 == 0 {
            corpus.extend_from_slice(RCU_SPLAT);
            corpus.push("nfs: server nas.local not responding, still trying");
        }
        if i % 25 == 0 {
            corpus.extend_from_slice(OOM_SPLAT);
        }
    }
    let rounds = 2_000_000 / corpus.len() + 1;
    let mut c = Classifier::new();
    let mut matched = 0usize;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for line in &corpus {
            if c.feed(line, None).kind.is_some() {
                matched += 1;
            }
            while c.pop_event().is_some() {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let lines = (rounds * corpus.len()) as f64;
    println!(
        "classified {lines} lines in {elapsed:.3}s: {:.0} lines/s ({matched} matched)",
        lines / elapsed
    );
    assert!(matched > 0);
}

fn record(c: &mut Classifier, text: &str) -> Vec<LineVerdict> {
    let mut out = Vec::new();
    c.feed_record(text, None, |v| out.push(v));
    out
}

#[test]
fn only_the_first_line_of_a_kernel_record_can_be_a_head() {
    let mut c = Classifier::new();
    let v = record(
        &mut c,
        "eth0: up\nwatchdog: Watchdog detected hard LOCKUP on cpu 0\nrcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    );
    assert_eq!(v.len(), 3);
    assert!(v.iter().all(|v| v.kind.is_none()), "{v:?}");
    assert!(c.open_event().is_none());
    // A head's own later lines continue it when they have the shape of a follow-up.
    let v = record(
        &mut c,
        "INFO: task mkdir:1 blocked for more than 5 seconds.\n      Not tainted 6.12.0 #1\nINFO: task other:2 blocked for more than 5 seconds.",
    );
    assert_eq!(v[0].kind, Some(EventKind::HungTask));
    assert!(!v[0].continuation);
    assert!(v[1].continuation && v[2].continuation, "{v:?}");
    c.flush();
    let events: Vec<Event> = std::iter::from_fn(|| c.pop_event()).collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].lines, 3);
}

#[test]
fn user_text_carriers_are_neither_heads_nor_follow_ups() {
    let mut c = Classifier::new();
    c.feed_record(RCU_SPLAT[0], None, |_| {});
    for carrier in [
        // A comm and a file name named after a head; a follow-up shape after a newline.
        "rcu: INFO: rcu_[4321]: segfault at 0 ip 0 sp 0 error 4 in rcu: kthread starved for 99999 jiffies![400000+1000] likely on CPU 0 (core 0, socket 0)",
        "x\n\tkthread starved for 99999 jiffies!: x: potentially unexpected fatal signal 11.",
        "process 'x\nwatchdog: Watchdog detected hard LOCKUP on cpu 0' started with executable stack",
    ] {
        let v = record(&mut c, carrier);
        assert!(v.iter().all(|v| v.kind.is_none()), "{carrier:?}: {v:?}");
    }
    // The stall is still open, and took nothing from them.
    let open = c
        .open_event()
        .expect("a carrier leaves the open splat alone");
    assert_eq!(open.lines, 1);
    assert_eq!(open.fields.kthread_starved_jiffies, None);
}

#[test]
fn heads_are_matched_whole_so_text_after_a_name_breaks_them() {
    for line in [
        "watchdog: Watchdog detected hard LOCKUP on cpu 0[400000+1000] likely on CPU 0 (core 0, socket 0)",
        "INFO: task mkdir:1 blocked for more than 5 seconds.[400000+1000]",
        "nfs: server nas not responding, still trying: x: potentially unexpected fatal signal 11",
        "xs_tcp_setup_so[1234]: segfault at 0 ip 0 sp 0 error 4 in : connect returned unhandled error -107",
        "containerd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0[400000+1000]",
        "w detected hard LOCKUP on cpu 0",
        "x detected hard LOCKUP on cpu 0",
    ] {
        assert_eq!(verdict(line), LineVerdict::none(), "{line:?}");
    }
}

/// Where a line's time goes, per head family (debug-build figures are only relative).
#[test]
#[ignore]
fn profile_heads_on_ordinary_lines() {
    let reps = 2000;
    for (i, (first, f)) in super::HEADS.iter().enumerate() {
        let lines: Vec<&str> = ORDINARY
            .iter()
            .copied()
            .filter(|l| first.contains(&l.as_bytes()[0]))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let t = std::time::Instant::now();
        for _ in 0..reps {
            for l in &lines {
                std::hint::black_box(f(std::hint::black_box(l)));
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (reps * lines.len()) as f64;
        println!(
            "head {i:2} {:?}: {ns:.0} ns/line over {} lines",
            std::str::from_utf8(first).unwrap(),
            lines.len()
        );
    }
    for (i, f) in super::HEADS_ANYWHERE.iter().enumerate() {
        let t = std::time::Instant::now();
        for _ in 0..reps {
            for l in ORDINARY {
                std::hint::black_box(f(std::hint::black_box(l)));
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (reps * ORDINARY.len()) as f64;
        println!("anywhere {i}: {ns:.0} ns/line");
    }
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for l in ORDINARY {
            std::hint::black_box(super::carriers::is_user_text_carrier(std::hint::black_box(
                l,
            )));
        }
    }
    println!(
        "carrier: {:.0} ns/line",
        t.elapsed().as_nanos() as f64 / (reps * ORDINARY.len()) as f64
    );
    let mut c = Classifier::new();
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for l in ORDINARY {
            std::hint::black_box(c.feed(l, None));
        }
    }
    println!(
        "feed: {:.0} ns/line",
        t.elapsed().as_nanos() as f64 / (reps * ORDINARY.len()) as f64
    );
}
