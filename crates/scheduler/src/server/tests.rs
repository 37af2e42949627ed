//! The server's timetable, driven as its loop drives it; ownership and webhook matching.
use super::timetable::{Finished, Timetable};
use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Drives a one-entry timetable from `start` for `span`, as the server's loop does: runs
/// take `run_time` (a run started before the end finishes), and `triggers` arrive at their
/// offsets from the start. Returns when each run started and what it ran, and the count
/// of skipped ticks.
/// Times are in seconds: `[span, run_time, offset]`.
fn simulate_with(
    schedule: &str,
    start: &str,
    [span, run_time, offset]: [i64; 3],
    triggers: &[(u64, Only)],
) -> (Vec<(DateTime<Utc>, Only)>, u64) {
    let schedule = Schedule::parse(schedule).unwrap();
    let start = utc(start);
    let end = start + chrono::Duration::seconds(span);
    let run_time = chrono::Duration::seconds(run_time);
    let offset = Duration::from_secs(offset as u64);
    let mut table = Timetable::default();
    assert!(table.add(0, &schedule, offset, start));
    let mut triggers = triggers.iter().peekable();
    let (mut runs, mut skipped, mut running_until) = (Vec::new(), 0, None);
    loop {
        let trigger = triggers
            .peek()
            .map(|(s, _)| start + chrono::Duration::seconds(*s as i64));
        let tick = table.next_due();
        let Some(now) = [running_until, trigger, tick].into_iter().flatten().min() else {
            break;
        };
        if running_until == Some(now) {
            running_until = None;
            let f = table.finished(0, &schedule, now);
            skipped += f.missed;
            if let Some(only) = f.again {
                runs.push((now, only));
                running_until = Some(now + run_time);
            }
            continue;
        }
        if now > end {
            break;
        }
        if trigger == Some(now) {
            let (_, only) = triggers.next().unwrap();
            if let Some(only) = table.trigger(0, only.clone()) {
                runs.push((now, only));
                running_until = Some(now + run_time);
            }
            continue;
        }
        assert_eq!(table.pop_due(now), Some(0));
        runs.push((now, Only::default()));
        running_until = Some(now + run_time);
    }
    (runs, skipped)
}

fn simulate(schedule: &str, start: &str, times: [i64; 3]) -> (Vec<DateTime<Utc>>, u64) {
    let (runs, skipped) = simulate_with(schedule, start, times, &[]);
    (runs.into_iter().map(|(t, _)| t).collect(), skipped)
}

fn only_tag(t: &str) -> Only {
    Only {
        repository: None,
        tag: Some(t.to_owned()),
    }
}

#[test]
fn intervals_tick_and_long_runs_skip_ticks() {
    let (runs, skipped) = simulate("@every 10m", "2026-11-29T00:00:00Z", [3605, 1, 0]);
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert_eq!(runs[0], utc("2026-11-29T00:10:00Z"));
    assert_eq!(runs[5], utc("2026-11-29T01:00:00Z"));
    assert_eq!(skipped, 0);
    // Runs of 25 minutes on a 10 minute interval: two ticks skipped after each run.
    let (runs, skipped) = simulate("@every 10m", "2026-11-29T00:00:00Z", [3601, 25 * 60, 0]);
    assert_eq!(
        runs,
        vec![utc("2026-11-29T00:10:00Z"), utc("2026-11-29T00:40:00Z")]
    );
    assert_eq!(skipped, 4);
}

#[test]
fn cron_with_a_time_zone_fires_at_local_times() {
    // 03:15 in Berlin is 02:15 UTC in winter; weekdays only (Mon-Fri), from a Friday.
    let (runs, _) = simulate(
        "CRON_TZ=Europe/Berlin 15 3 * * 1-5",
        "2026-11-27T12:00:00Z",
        [3 * 86_400, 1, 0],
    );
    assert_eq!(
        runs,
        vec![utc("2026-11-30T02:15:00Z")],
        "Saturday and Sunday are skipped"
    );
}

#[test]
fn offsets_shift_every_tick() {
    let (runs, _) = simulate("@hourly", "2026-11-29T00:30:00Z", [7200, 1, 17]);
    assert_eq!(
        runs,
        vec![utc("2026-11-29T01:00:17Z"), utc("2026-11-29T02:00:17Z")]
    );
}

#[test]
fn triggers_run_at_once_and_pending_ones_wait_for_the_running_one() {
    // Two triggers arrive during the first run: they become one run right after it.
    let (runs, _) = simulate_with(
        "@every 1h",
        "2026-11-29T00:00:00Z",
        [65, 10, 0],
        &[
            (0, only_tag("1")),
            (5, Only::default()),
            (6, Only::default()),
        ],
    );
    assert_eq!(
        runs,
        vec![
            (utc("2026-11-29T00:00:00Z"), only_tag("1")),
            (utc("2026-11-29T00:00:10Z"), Only::default()),
        ]
    );
}

#[test]
fn a_burst_of_different_pushes_becomes_one_full_run() {
    let (runs, _) = simulate_with(
        "@every 1h",
        "2026-11-29T00:00:00Z",
        [60, 5, 0],
        &[
            (0, only_tag("1")),
            (0, only_tag("1")),
            (1, only_tag("2")),
            (1, only_tag("3")),
            (1, only_tag("2")),
        ],
    );
    let ran: Vec<Only> = runs.into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        ran,
        vec![only_tag("1"), Only::default()],
        "identical pushes collapse; different ones become a full run"
    );
    // The same push twice during a run: one more run of that tag only.
    let (runs, _) = simulate_with(
        "@every 1h",
        "2026-11-29T00:00:00Z",
        [60, 5, 0],
        &[(0, only_tag("1")), (1, only_tag("2")), (2, only_tag("2"))],
    );
    let ran: Vec<Only> = runs.into_iter().map(|(_, o)| o).collect();
    assert_eq!(ran, vec![only_tag("1"), only_tag("2")]);
}

#[test]
fn a_run_of_the_old_configuration_holds_the_entry_after_a_reload() {
    let schedule = Schedule::parse("@every 10m").unwrap();
    let t0 = utc("2026-11-29T00:00:00Z");
    let mut table = Timetable::default();
    assert!(table.add(0, &schedule, Duration::ZERO, t0));
    table.inherit(0);
    assert!(table.is_inherited(0));
    // Neither its tick nor a trigger starts a second run while the old one goes on.
    assert_eq!(table.pop_due(utc("2026-11-29T00:10:00Z")), None);
    assert_eq!(table.trigger(0, only_tag("1")), None);
    assert_eq!(table.busy().collect::<Vec<_>>(), vec![0]);
    // When it ends, the trigger runs, and the tick it covered counts as skipped.
    let f = table.finished(0, &schedule, utc("2026-11-29T00:12:00Z"));
    assert_eq!(
        f,
        Finished {
            missed: 1,
            again: Some(only_tag("1"))
        }
    );
    let f = table.finished(0, &schedule, utc("2026-11-29T00:13:00Z"));
    assert_eq!(f.again, None);
    assert_eq!(table.next_due(), Some(utc("2026-11-29T00:20:00Z")));
    assert_eq!(table.busy().count(), 0);
}

#[test]
fn thousands_of_entries_wait_in_one_heap_in_time_order() {
    let schedule = Schedule::parse("@every 1h").unwrap();
    let t0 = utc("2026-11-29T00:00:00Z");
    let mut table = Timetable::default();
    for i in 0..5000u32 {
        let name = format!("e-{i}");
        let offset = jitter(&name, Duration::from_secs(30), &schedule);
        assert!(table.add(i, &schedule, offset, t0));
    }
    // Every entry fires once in the hour's first 30 seconds, in time order, spread out.
    let mut fired = Vec::new();
    let mut seconds = std::collections::HashSet::new();
    let mut last = t0;
    while let Some(at) = table.next_due() {
        if at > utc("2026-11-29T01:00:30Z") {
            break;
        }
        assert!(at >= last, "in time order");
        last = at;
        assert!(at >= utc("2026-11-29T01:00:00Z"), "{at}");
        seconds.insert(at.timestamp());
        let slot = table.pop_due(at).unwrap();
        fired.push(table.entry(slot));
        assert_eq!(table.finished(slot, &schedule, at).missed, 0);
    }
    fired.sort_unstable();
    assert_eq!(fired, (0..5000).collect::<Vec<_>>());
    assert_eq!(
        seconds.len(),
        30,
        "entries on one interval start in each of 30 seconds"
    );
    assert_eq!(
        table.next_due().map(|t| t >= utc("2026-11-29T02:00:00Z")),
        Some(true)
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
