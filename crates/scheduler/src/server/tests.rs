//! The scheduler's loops, with a paused clock; ownership and webhook matching.
use super::*;
use std::sync::Mutex;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Runs `schedule_loop` on paused time for `span`, with runs taking `run_time`; returns
/// the clock times of the runs and the skipped-tick count.
async fn simulate(
    schedule: &str,
    start: &str,
    span: Duration,
    run_time: Duration,
    offset: Duration,
) -> (Vec<DateTime<Utc>>, u64) {
    let clock = TokioClock::starting_at(utc(start));
    let schedule = Schedule::parse(schedule).unwrap();
    let (_tx, mut rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let runs = Mutex::new(Vec::new());
    let skipped = Mutex::new(0u64);
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(span).await;
        stopper.cancel();
    });
    schedule_loop(
        &clock,
        &schedule,
        offset,
        &mut rx,
        &stop,
        |_| {
            runs.lock().unwrap().push(clock.now());
            async move {
                tokio::time::sleep(run_time).await;
                true
            }
        },
        |n| *skipped.lock().unwrap() += n,
    )
    .await;
    let r = runs.lock().unwrap().clone();
    let s = *skipped.lock().unwrap();
    (r, s)
}

#[tokio::test(start_paused = true)]
async fn intervals_tick_and_long_runs_skip_ticks() {
    let (runs, skipped) = simulate(
        "@every 10m",
        "2026-11-29T00:00:00Z",
        Duration::from_secs(3605),
        Duration::from_secs(1),
        Duration::ZERO,
    )
    .await;
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert_eq!(runs[0], utc("2026-11-29T00:10:00Z"));
    assert_eq!(runs[5], utc("2026-11-29T01:00:00Z"));
    assert_eq!(skipped, 0);
    // Runs of 25 minutes on a 10 minute interval: two ticks skipped after each run.
    let (runs, skipped) = simulate(
        "@every 10m",
        "2026-11-29T00:00:00Z",
        Duration::from_secs(3601),
        Duration::from_secs(25 * 60),
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        runs,
        vec![utc("2026-11-29T00:10:00Z"), utc("2026-11-29T00:40:00Z")]
    );
    assert_eq!(skipped, 4);
}

#[tokio::test(start_paused = true)]
async fn cron_with_a_time_zone_fires_at_local_times() {
    // 03:15 in Berlin is 02:15 UTC in winter; weekdays only (Mon-Fri), from a Friday.
    let (runs, _) = simulate(
        "CRON_TZ=Europe/Berlin 15 3 * * 1-5",
        "2026-11-27T12:00:00Z",
        Duration::from_secs(3 * 86_400),
        Duration::from_secs(1),
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        runs,
        vec![utc("2026-11-30T02:15:00Z")],
        "Saturday and Sunday are skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn offsets_shift_every_tick() {
    let (runs, _) = simulate(
        "@hourly",
        "2026-11-29T00:30:00Z",
        Duration::from_secs(7200),
        Duration::from_secs(1),
        Duration::from_secs(17),
    )
    .await;
    assert_eq!(
        runs,
        vec![utc("2026-11-29T01:00:17Z"), utc("2026-11-29T02:00:17Z")]
    );
}

#[tokio::test(start_paused = true)]
async fn triggers_run_at_once_and_a_pending_one_waits_for_the_running_one() {
    let clock = TokioClock::starting_at(utc("2026-11-29T00:00:00Z"));
    let schedule = Schedule::parse("@every 1h").unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let runs = Mutex::new(Vec::new());
    let s2 = stop.clone();
    tokio::spawn(async move {
        tx.try_send(Only {
            repository: None,
            tag: Some("1".into()),
        })
        .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Arrives while the first run goes on: it runs right after it.
        tx.try_send(Only::default()).unwrap();
        assert!(
            tx.try_send(Only::default()).is_err(),
            "a second pending trigger is debounced"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        s2.cancel();
    });
    schedule_loop(
        &clock,
        &schedule,
        Duration::ZERO,
        &mut rx,
        &stop,
        |only| {
            runs.lock().unwrap().push((clock.now(), only));
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                true
            }
        },
        |_| {},
    )
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].0, utc("2026-11-29T00:00:00Z"));
    assert_eq!(runs[0].1.tag.as_deref(), Some("1"));
    assert_eq!(runs[1].0, utc("2026-11-29T00:00:10Z"));
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_different_pushes_becomes_one_full_run() {
    let clock = TokioClock::starting_at(utc("2026-11-29T00:00:00Z"));
    let schedule = Schedule::parse("@every 1h").unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let runs = Mutex::new(Vec::new());
    let s2 = stop.clone();
    let only = |t: &str| Only {
        repository: None,
        tag: Some(t.to_owned()),
    };
    tx.try_send(only("1")).unwrap();
    tx.try_send(only("1")).unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for t in ["2", "3", "2"] {
            tx.try_send(only(t)).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        s2.cancel();
    });
    schedule_loop(
        &clock,
        &schedule,
        Duration::ZERO,
        &mut rx,
        &stop,
        |o| {
            runs.lock().unwrap().push(o);
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                true
            }
        },
        |_| {},
    )
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(
        runs,
        vec![only("1"), Only::default()],
        "identical pushes collapse; different ones become a full run"
    );
}

#[test]
fn jitter_is_bounded_and_stable() {
    let hourly = Schedule::parse("@hourly").unwrap();
    let every = Schedule::parse("@every 1m").unwrap();
    for i in 0..200 {
        let name = format!("e-{i}");
        let j = jitter(&name, Duration::from_secs(30), &hourly);
        assert!(j < Duration::from_secs(30));
        assert_eq!(j, jitter(&name, Duration::from_secs(30), &hourly));
        assert!(
            jitter(&name, Duration::from_secs(30), &every) < Duration::from_secs(6),
            "a tenth of the interval"
        );
    }
    let spread: std::collections::HashSet<_> = (0..50)
        .map(|i| jitter(&format!("e-{i}"), Duration::from_secs(30), &hourly).as_secs())
        .collect();
    assert!(spread.len() > 10, "offsets spread out: {spread:?}");
}

#[test]
fn a_push_is_traced_to_the_shards_that_own_its_entries() {
    let yaml = "sync:\n  - name: app\n    source: docker.io/team/app\n    target: localhost:5000/app\n    type: repository\n    interval: 1h\n  - name: whole\n    source: docker.io\n    target: localhost:5000/hub\n    type: registry\n    interval: 1h\n    repos:\n      allow: ['team/.*']\n  - name: unscheduled\n    source: docker.io/team/other\n    target: localhost:5000/other\n    type: repository\n";
    let config = regferry_config::load_str(yaml, "t.yaml", &regferry_config::template::SystemHost)
        .expect("config")
        .config;
    let app = owner("app", 3);
    assert!(owns("app", app, 3));
    assert_eq!(
        (0..3).filter(|i| owns("app", *i, 3)).count(),
        1,
        "exactly one owner"
    );
    // A registry entry's repository has one owner too.
    let mut both = vec![app, owner(&repository_key("whole", "team/app"), 3)];
    both.sort_unstable();
    both.dedup();
    assert_eq!(
        push_owners(&config, 3, "docker.io/team/app", Some("1")),
        both
    );
    // Without it, only the repository entry's owner; unscheduled entries never run.
    let only_app = regferry_config::Config {
        sync: config
            .sync
            .iter()
            .filter(|e| e.name != "whole")
            .cloned()
            .collect(),
        ..config.clone()
    };
    assert_eq!(
        push_owners(&only_app, 3, "docker.io/team/app", None),
        vec![app]
    );
    assert!(push_owners(&only_app, 3, "docker.io/team/other", None).is_empty());
    assert!(push_owners(&only_app, 3, "docker.io/else/app", None).is_empty());
}
