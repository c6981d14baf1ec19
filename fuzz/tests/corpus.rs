//! Runs every fuzz target on stable Rust: first over the committed corpus (`fuzz/corpus/`,
//! seeds plus anything a fuzzing run found worth keeping), then over inputs made by mutating
//! those seeds with a fixed-seed generator. The same functions run under libFuzzer with
//! `cargo +nightly fuzz run <target>` (see `docs/reliability.md`).
//!
//! `FUZZ_ITERATIONS` sets the generated inputs per target (default 20,000).

use faaskeeper_fuzz_harness::TARGETS;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("read a corpus file"))
        .collect()
}

/// splitmix64: small, fixed-seed, good enough to mutate inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation of `seed` as libFuzzer's simplest mutators make them: flip, insert, delete,
/// overwrite with an interesting byte, splice in another seed, or fresh random bytes.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 if at < out.len() => {
                const INTERESTING: &[u8] = b"\0\x7f\x80\xff\"{}[]:,-0/\\";
                out[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            4 => {
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                out.splice(at..at, other[from..to].iter().copied());
            }
            _ => out = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        }
    }
    out
}

#[test]
fn every_target_holds_on_its_corpus_and_on_mutations() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for (name, target) in TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "target {name} has no corpus");
        for seed in &seeds {
            target(seed);
        }
        // Each target its own fixed stream, so adding a target changes no other's inputs.
        let mut rng = Rng(name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }));
        for _ in 0..iterations {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            target(&input);
        }
        println!(
            "{name}: {} corpus inputs, {iterations} mutations",
            seeds.len()
        );
    }
}

/// The JSON seeds are what they claim to be: a seed that no longer decodes (because a wire
/// type changed) would quietly stop exercising anything past the decoder.
#[test]
fn json_seeds_decode() {
    use faaskeeper_core::apply::{NodeRecord, SessionRecord, WatchRecord};
    use faaskeeper_core::wire::{
        Delivery, DeliveryBatch, LogEntry, LogHead, Submission, Txn, WriteBatch,
    };
    fn decodes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> bool {
        serde_json::from_slice::<T>(bytes).is_ok()
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read a seed");
    assert!(decodes::<WriteBatch>(&read(
        "write_batch/valid-every-op.json"
    )));
    assert!(decodes::<WriteBatch>(&read(
        "write_batch/valid-create.json"
    )));
    assert!(!decodes::<WriteBatch>(&read("write_batch/malformed.json")));
    let p = "stage_payloads/";
    assert!(decodes::<Txn>(&read(&format!("{p}txn.json"))));
    assert!(decodes::<LogEntry>(&read(&format!("{p}log-entry.json"))));
    assert!(decodes::<LogEntry>(&read(&format!("{p}log-record.json"))));
    // The binary layout writers store log records in now.
    let binary = faaskeeper_core::wire::decode_log_record(&read(&format!("{p}log-record.bin")))
        .expect("the binary log record seed decodes");
    assert_eq!(binary.payloads(), [b"hello".as_slice(), b"\x00\xff binary"]);
    assert!(decodes::<LogHead>(&read(&format!("{p}log-head.json"))));
    assert!(decodes::<NodeRecord>(&read(&format!(
        "{p}node-record.json"
    ))));
    assert!(decodes::<SessionRecord>(&read(&format!(
        "{p}session-record.json"
    ))));
    assert!(decodes::<WatchRecord>(&read(&format!(
        "{p}watch-record.json"
    ))));
    assert!(decodes::<Delivery>(&read(&format!("{p}delivery.json"))));
    assert!(decodes::<DeliveryBatch>(&read(&format!(
        "{p}delivery-batch.json"
    ))));
    assert!(decodes::<Vec<Submission>>(&read(&format!(
        "{p}submissions.json"
    ))));
}
