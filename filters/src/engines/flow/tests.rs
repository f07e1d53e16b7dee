use super::*;

#[test]
fn states_only_grow_and_keep_their_explanation() {
    let mut st = FlowState::default();
    let src = |i: usize, level: u8, untrusted: bool| Source {
        id: format!("fl_{i}"),
        what: format!("s/t{i}"),
        level,
        untrusted,
    };
    assert!(st.raise(&src(0, 3, false)));
    assert!(st.raise(&src(1, 0, true)));
    for i in 2..100 {
        st.raise(&src(i, 1, false));
    }
    assert_eq!((st.level, st.untrusted), (3, true));
    assert!(st.sources.len() <= MAX_SOURCES);
    let (high, untrusted) = st.culprits();
    assert_eq!(high.map(|s| s.id.as_str()), Some("fl_0"));
    assert_eq!(untrusted.map(|s| s.id.as_str()), Some("fl_1"));
    let mut other = FlowState::default();
    other.merge(&st);
    assert_eq!(other.level, 3);
    assert!(!other.raise(&src(200, 2, false)), "lower adds nothing");
}

fn long(i: usize, len: usize) -> Source {
    Source {
        id: format!("fl_{i:016x}"),
        what: format!("srv:{}", "é".repeat(len / 2)),
        level: i as u8,
        untrusted: i.is_multiple_of(2),
    }
}

/// Attack G: a state keeps each call's name to [`MAX_NAME`] bytes (a
/// resource's URI can be as long as a client likes), cut at a character
/// boundary and marked; so do states merged from the shared store.
#[test]
fn source_names_are_bounded() {
    let mut st = FlowState::default();
    assert!(st.raise(&long(1, 10_000)));
    let kept = &st.sources[0].what;
    assert!(kept.len() <= MAX_NAME && kept.ends_with('…'), "{kept}");
    assert!(kept.starts_with("srv:é"), "{kept}");
    let short = Source {
        what: "hr/get_employee".into(),
        ..long(2, 0)
    };
    st.raise(&short);
    assert_eq!(st.sources[1].what, "hr/get_employee", "short names stay");
    let foreign = FlowState {
        level: 9,
        untrusted: true,
        sources: vec![Source {
            id: "x".repeat(5_000),
            ..long(9, 5_000)
        }],
    };
    st.merge(&foreign);
    assert!(
        st.sources
            .iter()
            .all(|s| s.what.len() <= MAX_NAME && s.id.len() <= 24),
        "{st:?}"
    );
    assert_eq!(bounded_name("a".repeat(65)).len(), MAX_NAME);
}

/// What a table entry may hold beside its state: the 32-byte key, when
/// it was last used, and the map's own bookkeeping per entry.
const ENTRY_OVERHEAD: usize = 512;

/// The heap and inline bytes of a state, each allocation rounded up to
/// the allocator's 16-byte classes.
fn footprint(st: &FlowState) -> usize {
    let alloc = |n: usize| n.div_ceil(16) * 16;
    std::mem::size_of::<FlowState>()
        + alloc(st.sources.capacity() * std::mem::size_of::<Source>())
        + st.sources
            .iter()
            .map(|s| alloc(s.id.capacity()) + alloc(s.what.capacity()))
            .sum::<usize>()
}

/// The flows table's bound (`Table::Flows`, one entry per flow key)
/// holds for the largest state: [`MAX_SOURCES`] sources whose names are
/// as long as a client can make them, raised one by one and merged from
/// another replica's view.
#[test]
fn the_largest_state_fits_its_table_entry() {
    let mut st = FlowState::default();
    for i in 1..=40 {
        st.raise(&long(i, 20_000));
    }
    let mut other = FlowState::default();
    for i in 100..140 {
        other.raise(&long(i, 20_000));
    }
    st.merge(&other);
    assert_eq!(st.sources.len(), MAX_SOURCES);
    let entry = warden_config::model::Table::Flows.entry_bytes() as usize;
    let used = footprint(&st) + ENTRY_OVERHEAD;
    assert!(
        used <= entry,
        "a state of {MAX_SOURCES} sources takes {used} bytes, the table counts {entry} per entry"
    );
}

fn source(i: usize, level: u8, untrusted: bool) -> Source {
    Source {
        id: format!("fl_{i}"),
        what: format!("s/t{i}"),
        level,
        untrusted,
    }
}

/// A full table never drops a live state to make room (it would come back
/// clean): a key it does not hold is not raised (`None`) until states idle
/// for a day are swept, and a state read within the day lives on.
#[test]
fn a_full_table_keeps_its_live_states() {
    let t = FlowTables::new(2);
    let now = 1_000_000;
    assert_eq!(
        t.raise(&[1; 32], &[0; 32], &source(1, 3, true), None, now),
        Some(true)
    );
    assert_eq!(
        t.raise(&[2; 32], &[0; 32], &source(2, 0, true), None, now),
        Some(true)
    );
    assert_eq!(
        t.raise(&[3; 32], &[0; 32], &source(3, 1, false), None, now + 5),
        None
    );
    assert_eq!(t.len(), 2);
    assert_eq!(t.get(&[3; 32], now + 5), FlowState::default());
    assert_eq!(t.get(&[1; 32], now + 5).level, 3, "still held");
    // A key it holds is raised as ever.
    assert_eq!(
        t.raise(&[2; 32], &[0; 32], &source(4, 2, false), None, now + 6),
        Some(true)
    );
    // A day on, the state read lately lives; the idle one is swept.
    let later = now + 6 + IDLE_SECS + 1;
    assert_eq!(t.get(&[1; 32], later - 2).level, 3);
    assert_eq!(
        t.raise(&[3; 32], &[0; 32], &source(3, 1, false), None, later),
        Some(true)
    );
    assert_eq!(t.len(), 2);
    assert_eq!(t.get(&[1; 32], later).level, 3);
    assert_eq!(t.get(&[2; 32], later), FlowState::default(), "idle a day");
}

/// Each owner holds at most its cap of a table's states: past it a key it
/// does not hold is not raised (`None`), another owner's is; a state swept
/// after a day idle gives its owner room again.
#[test]
fn an_owner_holds_at_most_its_cap() {
    assert_eq!(super::per_owner(4), 4, "a small table is anyone's");
    assert_eq!(super::per_owner(1_700), 106);
    assert_eq!(super::per_owner(14_000), 875);
    let t = FlowTables::new(1_000);
    let now = 1_000_000;
    let (a, b) = ([0xa; 32], [0xb; 32]);
    for i in 0..64u8 {
        assert_eq!(
            t.raise(&[i; 32], &a, &source(i.into(), 1, false), None, now),
            Some(true)
        );
    }
    assert_eq!(
        t.raise(&[200; 32], &a, &source(200, 1, false), None, now),
        None
    );
    assert_eq!(
        t.raise(&[3; 32], &a, &source(201, 2, false), None, now),
        Some(true),
        "a state it holds is raised as ever"
    );
    assert_eq!(
        t.raise(&[201; 32], &b, &source(202, 1, false), None, now),
        Some(true)
    );
    assert_eq!(t.len(), 65);
    // A day on, all but one of its states idle: swept, room again.
    let later = now + IDLE_SECS + 1;
    assert_eq!(t.get(&[3; 32], later - 1).level, 2);
    assert_eq!(
        t.raise(&[200; 32], &a, &source(203, 1, false), None, later),
        Some(true)
    );
    assert_eq!(t.len(), 2, "the idle ones swept (b's too)");
}

/// What a replica read of a flow in the shared store it keeps, merged with
/// what it holds, so a store that forgets can only make it stricter; a
/// clean read is not stored; at the table's bound (full, or the owner at
/// its cap) a key it does not hold cannot be vouched for: `None`.
#[test]
fn a_read_state_is_kept_and_the_bound_fails_closed() {
    let t = FlowTables::new(64 * 2);
    let now = 1_000_000;
    let mut read = FlowState::default();
    read.raise(&source(1, 3, false));
    read.raise(&source(2, 0, true));
    let kept = t.keep(&[1; 32], &[9; 32], &read, now).expect("room");
    assert_eq!((kept.level, kept.untrusted), (3, true));
    // The store forgot: what this replica read is still known.
    let empty = FlowState::default();
    let again = t.keep(&[1; 32], &[9; 32], &empty, now + 1).expect("held");
    assert_eq!((again.level, again.untrusted), (3, true));
    assert!(again.exceeds(&empty) && !again.exceeds(&read));
    assert_eq!(t.get(&[1; 32], now + 2).level, 3);
    // A clean read of a key not held takes no room.
    assert!(t.keep(&[2; 32], &[9; 32], &empty, now).is_some());
    assert_eq!(t.len(), 1);
    // The owner at its cap: another of its keys cannot be kept, clean or not.
    for i in 0..63u8 {
        assert!(t.keep(&[100 + i; 32], &[9; 32], &read, now).is_some());
    }
    assert_eq!(t.len(), 64);
    assert!(t.keep(&[3; 32], &[9; 32], &read, now).is_none());
    assert!(t.keep(&[3; 32], &[9; 32], &empty, now).is_none());
    // Held keys are merged as ever.
    assert!(t.keep(&[1; 32], &[9; 32], &empty, now).is_some());
    // The table full of live states: nobody's new key.
    for i in 170..234u8 {
        assert!(t.keep(&[i; 32], &[i; 32], &read, now).is_some());
    }
    assert_eq!(t.len(), 128);
    assert!(t.keep(&[250; 32], &[250; 32], &empty, now).is_none());
}
