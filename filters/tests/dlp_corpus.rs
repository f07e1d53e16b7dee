//! Precision and recall of the DLP detectors on a labelled corpus
//! (`tests/data/dlp_corpus.jsonl`: positives and tricky negatives — order
//! numbers that fail Luhn, invalid SSNs, UUIDs, timestamps, git SHAs,
//! phone-like ids, placeholders). Fails below the documented floors.

use std::collections::BTreeMap;

use warden_filters::engines::dlp::Scanner;

/// Floors (README, DLP section): every detector with samples must reach them.
const MIN_PRECISION: f64 = 0.95;
const MIN_RECALL: f64 = 0.95;

#[test]
fn detectors_meet_their_precision_and_recall_floors() {
    let scanner = Scanner::new(&[]).expect("scanner");
    let corpus = include_str!("data/dlp_corpus.jsonl");
    // detector → (true positives, false positives, false negatives)
    let mut stats: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut mistakes = Vec::new();
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).expect("row");
        let text = row["text"].as_str().expect("text");
        let expect: Vec<String> = row["expect"]
            .as_array()
            .expect("expect")
            .iter()
            .map(|v| v.as_str().expect("name").to_owned())
            .collect();
        let mut hits = Vec::new();
        scanner.scan_str(text, &mut hits);
        let got: Vec<String> = hits
            .iter()
            .map(|h| scanner.detectors()[h.detector].name.clone())
            .collect();
        for g in &got {
            let e = stats.entry(g.clone()).or_default();
            if expect.contains(g) {
                e.0 += 1;
            } else {
                e.1 += 1;
                mistakes.push(format!("false positive {g}: {text}"));
            }
        }
        for x in &expect {
            if !got.contains(x) {
                stats.entry(x.clone()).or_default().2 += 1;
                mistakes.push(format!("missed {x}: {text}"));
            }
        }
    }
    let mut failing = Vec::new();
    println!(
        "{:<34} {:>4} {:>4} {:>4} {:>9} {:>7}",
        "detector", "tp", "fp", "fn", "precision", "recall"
    );
    for (name, (tp, fp, fnn)) in &stats {
        let p = if tp + fp == 0 {
            1.0
        } else {
            *tp as f64 / (*tp + *fp) as f64
        };
        let r = if tp + fnn == 0 {
            1.0
        } else {
            *tp as f64 / (*tp + *fnn) as f64
        };
        println!("{name:<34} {tp:>4} {fp:>4} {fnn:>4} {p:>9.2} {r:>7.2}");
        if p < MIN_PRECISION || r < MIN_RECALL {
            failing.push(name.clone());
        }
    }
    assert!(
        failing.is_empty(),
        "below the floors: {failing:?}\n{}",
        mistakes.join("\n")
    );
}
