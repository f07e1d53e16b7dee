//! The rollout rules: labels, selectors, shares and the canary's verdicts.

use super::*;

fn stats(calls: u64, denied: u64, errors: u64) -> Stats {
    Stats {
        calls,
        denied,
        errors,
        latency: vec![(0.001, calls / 2), (0.01, calls), (1e9, calls)],
        replies: calls,
        withheld: 0,
    }
}

#[test]
fn labels_and_selectors() {
    let l = labels_of("env=prod, region=eu-west/1").expect("labels");
    assert_eq!(l.len(), 2);
    assert!(Selector(labels_of("env=prod").expect("sel")).matches(&l));
    assert!(!Selector(labels_of("env=staging").expect("sel")).matches(&l));
    assert!(Selector::default().matches(&Labels::new()));
    for bad in ["env", "env=", "=x", "a=b,a=c", "k=v v", "k=\u{e9}"] {
        assert!(labels_of(bad).is_err(), "{bad}");
    }
    let c = Target::Canary {
        labels: Selector::default(),
        members: ["gw1".to_owned()].into(),
    };
    assert!(c.reaches("gw1", &l) && !c.reaches("gw2", &l));
}

#[test]
fn canary_verdicts() {
    let g = Guard::default();
    let rest = Baseline::of(&[stats(1000, 10, 0), stats(500, 5, 0)], &g);
    assert_eq!(judge(&stats(10, 10, 0), &rest, &g, false), Verdict::Wait);
    assert!(matches!(
        judge(&stats(100, 30, 0), &rest, &g, false),
        Verdict::RollBack(r) if r.contains("denial rate 30.0%")
    ));
    assert!(matches!(
        judge(&stats(100, 0, 9), &rest, &g, false),
        Verdict::RollBack(r) if r.contains("error rate")
    ));
    assert_eq!(judge(&stats(100, 2, 0), &rest, &g, false), Verdict::Wait);
    assert!(matches!(
        judge(&stats(100, 2, 0), &rest, &g, true),
        Verdict::Promote(_)
    ));
    assert!(matches!(
        judge(&stats(5, 0, 0), &rest, &g, true),
        Verdict::RollBack(r) if r.contains("only 5 calls")
    ));
    // A slow canary.
    let mut slow = stats(100, 0, 0);
    slow.latency = vec![(0.001, 0), (0.5, 100), (1e9, 100)];
    assert!(matches!(judge(&slow, &rest, &g, false), Verdict::RollBack(r) if r.contains("p99")));
    // Nothing on the rest: absolute thresholds.
    assert!(matches!(
        judge(&stats(100, 6, 0), &Baseline::of(&[], &g), &g, false),
        Verdict::RollBack(_)
    ));
}

/// Replies withheld count against a canary as calls denied do: a
/// bundle that forwards every call and withholds every answer is
/// rolled back; a reply withheld on the rest as often is no breach.
#[test]
fn withheld_replies_are_denials() {
    let g = Guard::default();
    let rest = Baseline::of(&[stats(1000, 10, 0), stats(1000, 10, 0)], &g);
    let mut c = stats(100, 0, 0);
    c.withheld = 100;
    assert!(matches!(
        judge(&c, &rest, &g, false),
        Verdict::RollBack(r) if r.contains("withheld replies 100.0%")
    ));
    let mut noisy = stats(1000, 10, 0);
    noisy.withheld = 900;
    c.withheld = 92;
    let noisy = Baseline::of(&[noisy.clone(), noisy], &g);
    assert_eq!(judge(&c, &noisy, &g, false), Verdict::Wait);
    // Counted from the window's start; more withheld than replies is
    // no report a gateway writes; fewer replies than before is
    // another process.
    let (a, mut b) = (stats(100, 0, 0), stats(300, 0, 0));
    b.withheld = 30;
    let d = b.since(&a);
    assert_eq!((d.replies, d.withheld), (200, 30));
    let mut back = stats(300, 0, 0);
    back.replies = 50;
    assert!(back.went_back(&b));
    assert!(Stats {
        withheld: 11,
        ..stats(10, 0, 0)
    }
    .check()
    .is_err());
}

/// One vote per gateway: a loud reporter is not the baseline; even a
/// majority of reporters moves it no more than the margin above the
/// gateway that shows least; one voter is no baseline; a canary member
/// is judged alone, never hidden by a louder one.
#[test]
fn a_loud_reporter_is_one_vote() {
    let g = Guard::default();
    let honest = stats(100, 0, 0);
    let loud = stats(5_000_000, 4_995_000, 5_000_000);
    let bad = stats(100, 100, 0);
    let b = Baseline::of(&[honest.clone(), honest.clone(), loud.clone()], &g);
    assert!(b.denial < 0.01 && b.error < 0.01 && b.disputed, "{b:?}");
    assert!(matches!(judge(&bad, &b, &g, true), Verdict::RollBack(_)));
    let b = Baseline::of(
        &[honest.clone(), loud.clone(), loud.clone(), loud.clone()],
        &g,
    );
    assert!(b.denial <= g.max_denial_increase + 1e-9, "{b:?}");
    assert!(matches!(judge(&bad, &b, &g, true), Verdict::RollBack(_)));
    // A slow reporter does not excuse a slow canary either.
    let mut slow = stats(100, 0, 0);
    slow.latency = vec![(0.001, 0), (5.0, 100), (1e9, 100)];
    let b = Baseline::of(&[honest.clone(), slow.clone(), slow.clone()], &g);
    assert!(b.p99.is_some_and(|p| p < 0.1), "{b:?}");
    assert!(matches!(judge(&slow, &b, &g, true), Verdict::RollBack(r) if r.contains("p99")));
    // Agreeing voters: their median.
    let b = Baseline::of(&[stats(100, 2, 0), stats(100, 3, 0), stats(100, 4, 0)], &g);
    assert!((b.denial - 0.03).abs() < 1e-9 && !b.disputed, "{b:?}");
    // One voter is no baseline: absolute.
    let b = Baseline::of(std::slice::from_ref(&loud), &g);
    assert!(b.absent.is_some() && b.denial == 0.0 && b.p99.is_none());
    assert!(matches!(judge(&bad, &b, &g, true), Verdict::RollBack(_)));
    // Members alone.
    let members = vec![
        ("real".to_owned(), stats(30, 30, 0)),
        ("loud".to_owned(), stats(1_000_000, 0, 0)),
    ];
    let mut all = Stats::default();
    members.iter().for_each(|(_, m)| all.add(m));
    let b = Baseline::of(&[honest.clone(), honest.clone()], &g);
    assert!(matches!(judge(&all, &b, &g, true), Verdict::Promote(_)));
    assert!(matches!(
        judge_members(&members, &all, &b, &g, true),
        Verdict::RollBack(w) if w.contains("`real`")
    ));
    // Members under min_calls each are judged together.
    let quiet = vec![
        ("a".to_owned(), stats(15, 15, 0)),
        ("b".to_owned(), stats(15, 15, 0)),
        ("loud".to_owned(), stats(1_000_000, 0, 0)),
    ];
    let mut all = Stats::default();
    quiet.iter().for_each(|(_, m)| all.add(m));
    assert!(matches!(
        judge_members(&quiet, &all, &b, &g, true),
        Verdict::RollBack(w) if w.contains("quieter")
    ));
}

#[test]
fn deltas_percentiles_and_picks() {
    let a = stats(100, 5, 1);
    let b = stats(300, 20, 1);
    let d = b.since(&a);
    assert_eq!((d.calls, d.denied, d.errors), (200, 15, 0));
    assert_eq!(d.p99(), Some(0.01));
    // A restart counts from zero.
    assert_eq!(a.since(&b), a);
    let ids: Vec<String> = (0..10).map(|i| format!("gw{i}")).collect();
    assert_eq!(pick(&ids, 0.1, "r1").len(), 1);
    assert_eq!(pick(&ids, 0.25, "r1").len(), 3);
    assert_eq!(pick(&ids, 1.0, "r1").len(), 10);
    assert_eq!(pick(&ids[..1], 0.1, "r1").len(), 1);
    assert_eq!(pick(&ids, 0.3, "r1"), pick(&ids, 0.3, "r1"));
    assert_eq!(share_of("10%"), Ok(0.1));
    assert_eq!(share_of("0.5"), Ok(0.5));
    assert!(share_of("0%").is_err() && share_of("150%").is_err());
}

#[test]
fn reports_and_guards_a_gateway_cannot_bend() {
    assert!(stats(10, 1, 0).check().is_ok());
    let bad = [
        Stats {
            latency: vec![(0.1, 5), (0.05, 6)],
            ..stats(10, 0, 0)
        },
        Stats {
            latency: vec![(0.1, 5), (0.2, 4)],
            ..stats(10, 0, 0)
        },
        Stats {
            latency: vec![(f64::NAN, 5)],
            ..stats(10, 0, 0)
        },
        Stats {
            latency: (1..=65).map(|i| (i as f64, 1)).collect(),
            ..stats(10, 0, 0)
        },
        stats(10, 11, 0),
    ];
    for b in bad {
        assert!(b.check().is_err(), "{b:?}");
    }
    let mut sum = stats(u64::MAX, 0, u64::MAX);
    sum.add(&stats(10, 0, 10));
    assert_eq!((sum.calls, sum.errors), (u64::MAX, u64::MAX), "saturates");
    let g = Guard {
        min_calls: 0,
        ..Guard::default()
    };
    assert!(g.check().is_err(), "a canary is never judged on no calls");
    assert!(Guard::default().check().is_ok());
}
