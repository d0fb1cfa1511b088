//! Power and thermal health through the real daemon, over Raspberry Pi 4 and 5 sysfs trees
//! that the tests build under an injected host root: the `rpi_volt` hwmon chip at the
//! number each board gives it, thermal zones with the boards' trip points, no `/dev/vcio`,
//! and the deprecated `get_throttled` file as a trap (a FIFO: opening it for reading
//! would wake the test's writer, and the test fails). The alarm is a plain file here, so
//! the daemon reads it on its fallback timer; the poll(2) wait on a real kernfs attribute
//! is tested in `power::alarm` (cgroup v2's `cgroup.events`).

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::support::{Daemon, poll, set_boot_id};

const GET_THROTTLED: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";

/// The files of one board, relative to the host root.
struct Board {
    name: &'static str,
    /// hwmon number of `rpi_volt`, and the other chips before it.
    hwmon: u32,
    other_chips: &'static [&'static str],
    temp: &'static str,
    trips: &'static [(&'static str, &'static str)],
}

const PI4: Board = Board {
    name: "pi4",
    hwmon: 1,
    other_chips: &["cpu_thermal"],
    temp: "48850",
    trips: &[("critical", "110000")],
};

const PI5: Board = Board {
    name: "pi5",
    hwmon: 2,
    other_chips: &["cpu_thermal", "rp1_adc"],
    temp: "52300",
    // bcm2712's fan-control active trips (50, 60, 67.5, 75 C) and the critical one.
    trips: &[
        ("critical", "110000"),
        ("active", "50000"),
        ("active", "60000"),
        ("active", "67500"),
        ("active", "75000"),
    ],
};

fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

impl Board {
    fn alarm(&self) -> String {
        format!("sys/class/hwmon/hwmon{}/in0_lcrit_alarm", self.hwmon)
    }

    /// Builds the tree as sysfs lays it out: the class entries are symlinks into
    /// `sys/devices`.
    fn build(&self, root: &Path) {
        let class = root.join("sys/class/hwmon");
        fs::create_dir_all(&class).unwrap();
        let mut chips: Vec<(u32, &str, String)> = self
            .other_chips
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, *n, format!("sys/devices/virtual/{n}/hwmon")))
            .collect();
        chips.push((
            self.hwmon,
            "rpi_volt",
            "sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon/hwmon".into(),
        ));
        for (n, name, dev) in chips {
            let dir = root.join(&dev).join(format!("hwmon{n}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("name"), format!("{name}\n")).unwrap();
            if name == "rpi_volt" {
                fs::write(dir.join("in0_lcrit_alarm"), "0\n").unwrap();
            }
            std::os::unix::fs::symlink(&dir, class.join(format!("hwmon{n}"))).unwrap();
        }
        let z = "sys/class/thermal/thermal_zone0";
        put(root, &format!("{z}/type"), "cpu-thermal\n");
        put(root, &format!("{z}/temp"), &format!("{}\n", self.temp));
        for (i, (kind, temp)) in self.trips.iter().enumerate() {
            put(
                root,
                &format!("{z}/trip_point_{i}_type"),
                &format!("{kind}\n"),
            );
            put(
                root,
                &format!("{z}/trip_point_{i}_temp"),
                &format!("{temp}\n"),
            );
        }
        assert!(!root.join("dev/vcio").exists());
    }
}

/// A FIFO at the deprecated path and a writer blocked opening it: the flag turns true
/// if anything opens the FIFO for reading.
struct Trap {
    path: PathBuf,
    opened: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trap {
    fn set(root: &Path) -> Trap {
        let path = root.join(GET_THROTTLED);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o444)).unwrap();
        let opened = Arc::new(AtomicBool::new(false));
        let (p, o) = (path.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            if fs::OpenOptions::new().write(true).open(&p).is_ok() {
                o.store(true, Ordering::SeqCst);
            }
        });
        Trap {
            path,
            opened,
            thread: Some(thread),
        }
    }

    /// Whether anything opened it; then releases the writer.
    fn sprung(mut self) -> bool {
        let sprung = self.opened.load(Ordering::SeqCst);
        assert!(
            sprung || !self.thread.as_ref().unwrap().is_finished(),
            "the trap's writer is not waiting in open(2): the trap was never set"
        );
        let _reader = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .unwrap();
        self.thread.take().unwrap().join().unwrap();
        sprung
    }
}

fn config(root: &Path) -> String {
    format!(
        "host_root = \"{}\"\n[kernel]\nenabled = false\n[memory]\nenabled = false\n\
         [mounts]\nenabled = false\n[runtime]\nenabled = false\n[kubernetes]\nenabled = false\n\
         [power]\ninterval = \"1s\"\nalarm_fallback_interval = \"1s\"\n",
        root.display()
    )
}

fn power_info(d: &Daemon) -> serde_json::Value {
    d.status()["detectors"]["power"].clone()
}

/// Waits for a power pass that ran after now and saw the alarm at `want`.
fn observe(d: &Daemon, want: bool) {
    let after = power_info(d)["last_run_unix"].as_f64().unwrap_or(0.0);
    poll(Duration::from_secs(15), || {
        let p = power_info(d);
        (p["last_run_unix"].as_f64().unwrap_or(0.0) > after
            && p["info"]["under_voltage"].as_bool() == Some(want))
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the daemon never saw the alarm at {want}: {}",
            power_info(d)
        )
    });
}

fn metric(m: &str, name: &str) -> Option<f64> {
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One board: a script of alarm values, the exact count, a restart in the same boot and a
/// new boot.
fn board(b: &Board) {
    let root = tempfile::tempdir().unwrap();
    b.build(root.path());
    set_boot_id(root.path(), "boot-1");
    let trap = Trap::set(root.path());
    let mut d = Daemon::start(&config(root.path()), &[]);
    let alarm = root.path().join(b.alarm());
    poll(Duration::from_secs(15), || {
        (power_info(&d)["info"]["under_voltage_alarm"] == b.alarm().as_str()).then_some(())
    })
    .unwrap_or_else(|| panic!("{}: rpi_volt not found: {}", b.name, power_info(&d)));
    // Written in place, as the driver's attribute changes under an open fd.
    let script = [
        true, false, true, true, false, true, false, false, true, false,
    ];
    let mut rises = 0;
    let mut last = false;
    for v in script {
        fs::write(&alarm, if v { "1\n" } else { "0\n" }).unwrap();
        observe(&d, v);
        rises += usize::from(v && !last);
        last = v;
    }
    assert_eq!(rises, 4);
    let m = d.metrics();
    assert_eq!(
        metric(&m, "nodemedic_under_voltage_episodes_this_boot"),
        Some(4.0),
        "{}: {m}",
        b.name
    );
    assert_eq!(
        metric(&m, "nodemedic_under_voltage_episodes_total"),
        Some(4.0),
        "{m}"
    );
    assert_eq!(metric(&m, "nodemedic_under_voltage"), Some(0.0), "{m}");
    let temp = format!(
        "nodemedic_thermal_zone_temperature_celsius{{zone=\"thermal_zone0\",type=\"cpu-thermal\"}} {}",
        b.temp.parse::<f64>().unwrap() / 1000.0
    );
    assert!(m.contains(&temp), "{temp}\n{m}");
    assert!(
        !m.contains("nodemedic_thermal_zone_passive_trip_celsius{"),
        "neither Pi has a passive trip: {m}"
    );
    assert!(
        !m.contains("nodemedic_firmware_throttled{"),
        "no /dev/vcio, no flags: {m}"
    );
    let st = d.status();
    let uv = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "UnderVoltage")
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(uv["reason"], "UnderVoltageRecently");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    let vcio: Vec<_> = d
        .log
        .iter()
        .filter(|l| l.contains("throttle flags are not read"))
        .collect();
    assert_eq!(vcio.len(), 1, "one info line, no spam: {:#?}", d.log);
    assert!(
        !vcio[0].contains("WARN") && !vcio[0].contains("ERROR"),
        "{}",
        vcio[0]
    );

    // A restart in the same boot with the alarm still set: no episode counted twice.
    fs::write(&alarm, "1\n").unwrap();
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let mut d = Daemon::start_in(dir, &config(root.path()), &[]);
    observe(&d, true);
    let m = d.metrics();
    assert_eq!(
        metric(&m, "nodemedic_under_voltage_episodes_this_boot"),
        Some(5.0),
        "{m}"
    );
    fs::write(&alarm, "0\n").unwrap();
    observe(&d, false);
    fs::write(&alarm, "1\n").unwrap();
    observe(&d, true);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let mut d = Daemon::start_in(dir, &config(root.path()), &[]);
    observe(&d, true);
    let m = d.metrics();
    assert_eq!(
        metric(&m, "nodemedic_under_voltage_episodes_this_boot"),
        Some(6.0),
        "same boot, same episode: {m}"
    );
    // A new boot with the alarm set: a new episode; the total goes on.
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    set_boot_id(root.path(), "boot-2");
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let mut d = Daemon::start_in(dir, &config(root.path()), &[]);
    observe(&d, true);
    let m = d.metrics();
    assert_eq!(
        metric(&m, "nodemedic_under_voltage_episodes_this_boot"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "nodemedic_under_voltage_episodes_total"),
        Some(7.0),
        "{m}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(!trap.sprung(), "{}: {GET_THROTTLED} was opened", b.name);
}

#[test]
fn pi4_and_pi5_trees_count_every_alarm_transition_and_never_open_get_throttled() {
    board(&PI4);
    board(&PI5);
}

#[test]
fn a_zone_above_its_passive_trip_for_the_sustain_raises_thermal_throttling() {
    let root = tempfile::tempdir().unwrap();
    PI4.build(root.path());
    set_boot_id(root.path(), "boot-1");
    let z = "sys/class/thermal/thermal_zone0";
    put(root.path(), &format!("{z}/trip_point_1_type"), "passive\n");
    put(root.path(), &format!("{z}/trip_point_1_temp"), "80000\n");
    put(root.path(), &format!("{z}/temp"), "81500\n");
    let mut d = Daemon::start(
        &format!(
            "{}thermal_sustain = \"2s\"\nthermal_calm = \"2s\"\n",
            config(root.path())
        ),
        &[],
    );
    let c = poll(Duration::from_secs(20), || {
        d.status()["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "ThermalThrottling")
            .cloned()
    })
    .expect("ThermalThrottling raised");
    assert_eq!(c["reason"], "AbovePassiveTrip");
    assert!(c["message"].as_str().unwrap().contains("81.5 C"), "{c}");
    assert!(d.metrics().contains(
        "nodemedic_thermal_zone_passive_trip_celsius{zone=\"thermal_zone0\",type=\"cpu-thermal\"} 80.0"
    ));
    put(root.path(), &format!("{z}/temp"), "60000\n");
    poll(Duration::from_secs(20), || {
        (!d.status()["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "ThermalThrottling"))
        .then_some(())
    })
    .expect("cleared after the calm");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}
