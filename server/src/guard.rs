//! The prompt guard: stops an answer that repeats the private prompt of its run.
//!
//! A model asked to "print your instructions verbatim" often does. The server is the one place
//! that knows both the prompt and the answer, so it watches every answer it relays:
//!
//! - Both texts are read as **words**: Unicode NFKC, case-folded, with every run of whitespace,
//!   Markdown, quote and bullet punctuation a separator, invisible format characters (zero-width
//!   spaces, soft hyphens, bidi controls) ignored, and numbers dropped, so line-number prefixes
//!   and list numbering vanish.
//! - Any run of `n` consecutive prompt words in the answer (default 8) is a **hit**, and so is
//!   the tool's **canary**, a random marker added to the prompt the model sees, found in the
//!   answer's letters and digits whatever the case or spacing.
//! - The relay **holds back** only the answer's trailing words that could still grow into a hit
//!   (at most `n - 1` whole words, plus a word still being spelled out, plus a possible start of
//!   the canary) and releases everything before them at once. So no complete run of `n` prompt
//!   words, and no canary, ever leaves the server, across chunk boundaries and words split
//!   between deltas, while an ordinary answer is delayed by a few words at most.
//!
//! [`PromptIndex`] is built once per prompt (cached per tool version by [`GuardCache`]);
//! [`Guard`] is the per-answer state.
//!
//! **Architecture Invariant:** nothing here logs or returns prompt or answer text; a hit is a
//! bare [`Hit`] value.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    sync::{Arc, Mutex},
};

use aniate_proto::tool::GuardMode;
use unicode_normalization::UnicodeNormalization;

/// The default length of a word run that counts as a leak.
pub const DEFAULT_NGRAM_WORDS: usize = 8;

/// The shortest and longest `n` the server accepts: shorter runs would stop ordinary answers
/// that share a phrase with a prompt; longer ones would let whole sentences through.
pub const NGRAM_WORDS_RANGE: std::ops::RangeInclusive<usize> = 4..=32;

/// A set of already well-mixed 64-bit hashes: no second hashing.
type HashSet64 = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with this hasher; fold any other bytes in anyway.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// What the guard knows about one private prompt: the hashes of every run of 1 to `n` of its
/// words, and its canary.
#[derive(Debug)]
pub struct PromptIndex {
    n_words: usize,
    /// `windows[k - 1]` holds the hash of every run of `k` consecutive prompt words.
    windows: Vec<HashSet64>,
    /// The canary's letters and digits, lowercase ASCII; empty when the prompt has none.
    canary: Vec<u8>,
    /// KMP failure function of `canary`.
    canary_fail: Vec<usize>,
    /// Characters in the longest word being spelled out that could still be a prompt word:
    /// past it, a word cannot be one (even allowing for NFKC), so it is not held back.
    max_word_chars: usize,
}

impl std::fmt::Debug for IdentityHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityHasher")
    }
}

impl PromptIndex {
    /// Indexes `prompt` for runs of `n_words` words (clamped to [`NGRAM_WORDS_RANGE`]).
    /// `canary` is the marker added to the prompt; only its ASCII letters and digits count.
    pub fn new(prompt: &str, canary: Option<&str>, n_words: usize) -> PromptIndex {
        let n_words = n_words.clamp(*NGRAM_WORDS_RANGE.start(), *NGRAM_WORDS_RANGE.end());
        let mut hashes = Vec::new();
        let mut words = WordSplitter::default();
        let mut longest_word = 0;
        for c in prompt.chars() {
            longest_word = longest_word.max(words.n_chars + 1);
            if let Some(word) = words.push(c, 0) {
                hashes.push(word.hash);
            }
        }
        if let Some(word) = words.finish() {
            hashes.push(word.hash);
        }
        let mut windows: Vec<HashSet64> = (0..n_words).map(|_| HashSet64::default()).collect();
        for end in 0..hashes.len() {
            let mut hash = 0u64;
            for k in 1..=n_words.min(end + 1) {
                hash = extend_window(hash, hashes[end + 1 - k], k);
                windows[k - 1].insert(hash);
            }
        }
        let canary: Vec<u8> = canary
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase() as u8)
            .collect();
        let canary_fail = kmp_failure(&canary);
        PromptIndex { n_words, windows, canary, canary_fail, max_word_chars: 4 * longest_word + 16 }
    }

    pub fn n_words(&self) -> usize {
        self.n_words
    }
}

/// The hash of a word run grown one word to the left: `hash` covers the `k - 1` words after
/// `word`. Windows are hashed from their last word backwards, so the relay can test every run
/// that ends at the newest word in one pass.
fn extend_window(hash: u64, word: u64, k: usize) -> u64 {
    // A different odd multiplier per position keeps `a b` and `b a` apart; the final mix
    // spreads the bits for the identity-hashed sets.
    let position = (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    mix(hash ^ word.wrapping_mul(position))
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn kmp_failure(pattern: &[u8]) -> Vec<usize> {
    let mut fail = vec![0; pattern.len()];
    let mut k = 0;
    for i in 1..pattern.len() {
        while k > 0 && pattern[i] != pattern[k] {
            k = fail[k - 1];
        }
        if pattern[i] == pattern[k] {
            k += 1;
        }
        fail[i] = k;
    }
    fail
}

/// Characters that do not show: they neither end a word nor belong to it, so a zero-width space
/// inside a word does not split it.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FE00}'..='\u{FE0F}')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)
}

/// A word just completed: its hash and where its first character was.
#[derive(Debug, Clone, Copy)]
struct Word {
    hash: u64,
    start: usize,
}

/// Splits characters into normalised words.
#[derive(Debug, Default)]
struct WordSplitter {
    raw: String,
    start: usize,
    /// Characters in `raw`.
    n_chars: usize,
}

impl WordSplitter {
    /// Takes one character found at byte `offset`; returns the word it ended, if any.
    fn push(&mut self, c: char, offset: usize) -> Option<Word> {
        if is_word_char(c) {
            if self.raw.is_empty() {
                self.start = offset;
            }
            self.raw.push(c);
            self.n_chars += 1;
            None
        } else if is_invisible(c) {
            None
        } else {
            self.finish()
        }
    }

    /// Ends the word being spelled out, if any. Numbers are not words.
    fn finish(&mut self) -> Option<Word> {
        if self.raw.is_empty() {
            return None;
        }
        let mut hash = FNV_OFFSET;
        let mut all_digits = true;
        let mut fold = |c: char| {
            all_digits &= c.is_numeric();
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
            }
        };
        if self.raw.is_ascii() {
            self.raw.chars().for_each(|c| fold(c.to_ascii_lowercase()));
        } else {
            self.raw.nfkc().flat_map(char::to_lowercase).filter(|c| c.is_alphanumeric()).for_each(fold);
        }
        self.raw.clear();
        self.n_chars = 0;
        (!all_digits).then_some(Word { hash: mix(hash), start: self.start })
    }

    /// Where the word being spelled out starts, if one is.
    fn pending_start(&self) -> Option<usize> {
        (!self.raw.is_empty()).then_some(self.start)
    }

    fn rebase(&mut self, released: usize) {
        self.start = self.start.saturating_sub(released);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The answer repeated the private prompt (or its canary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit;

/// The guard's state for one answer.
#[derive(Debug)]
pub struct Guard {
    index: Arc<PromptIndex>,
    /// Whether text that could still grow into a hit is held back (`block`) or released at once
    /// and only reported (`log`).
    hold: bool,
    /// Answer text received but not yet released.
    pending: String,
    splitter: WordSplitter,
    /// The newest completed words, at most `n - 1`, with offsets into `pending` (or 0 once
    /// released).
    recent: std::collections::VecDeque<Word>,
    /// How many of the canary's characters the answer's latest letters and digits match.
    canary_matched: usize,
    /// Offsets in `pending` of the latest letters and digits, as many as `canary_matched`.
    canary_offsets: std::collections::VecDeque<usize>,
    hit: bool,
}

impl Guard {
    pub fn new(index: Arc<PromptIndex>, mode: GuardMode) -> Guard {
        let capacity = index.n_words;
        Guard {
            index,
            hold: mode == GuardMode::Block,
            pending: String::new(),
            splitter: WordSplitter::default(),
            recent: std::collections::VecDeque::with_capacity(capacity),
            canary_matched: 0,
            canary_offsets: std::collections::VecDeque::new(),
            hit: false,
        }
    }

    /// Takes the next piece of the answer; returns the text that may be sent now (possibly
    /// empty), or [`Hit`]. After a hit every call returns `Hit`.
    pub fn push(&mut self, text: &str) -> Result<String, Hit> {
        if self.hit {
            return Err(Hit);
        }
        let base = self.pending.len();
        self.pending.push_str(text);
        for (idx, c) in text.char_indices() {
            let offset = base + idx;
            if let Some(word) = self.splitter.push(c, offset) {
                self.add_word(word)?;
            }
            self.add_canary_char(c, offset)?;
        }
        Ok(self.release())
    }

    /// Ends the answer: checks the last word and returns everything still held.
    pub fn finish(&mut self) -> Result<String, Hit> {
        if self.hit {
            return Err(Hit);
        }
        if let Some(word) = self.splitter.finish() {
            self.add_word(word)?;
        }
        self.recent.clear();
        self.canary_offsets.clear();
        self.canary_matched = 0;
        Ok(std::mem::take(&mut self.pending))
    }

    fn add_word(&mut self, word: Word) -> Result<(), Hit> {
        // `recent` holds the longest run of the newest words that is part of the prompt (at
        // most n - 1 words), so every prompt run that ends at `word` is `word` plus a suffix
        // of `recent`. Test them shortest first: a run's sub-runs are prompt runs too, so the
        // first miss ends the search.
        self.recent.push_back(word);
        let mut hash = 0u64;
        let mut longest = 0;
        for (idx, earlier) in self.recent.iter().rev().enumerate() {
            let k = idx + 1;
            hash = extend_window(hash, earlier.hash, k);
            if !self.index.windows[k - 1].contains(&hash) {
                break;
            }
            longest = k;
        }
        if longest == self.index.n_words {
            return self.on_hit();
        }
        // Forget the words that can no longer be part of a hit.
        while self.recent.len() > longest {
            self.recent.pop_front();
        }
        Ok(())
    }

    fn on_hit(&mut self) -> Result<(), Hit> {
        self.hit = true;
        // Keep only what comes before the repeated words: it was never part of them.
        let keep_from = self.hold_from();
        self.pending.truncate(keep_from);
        Err(Hit)
    }

    /// After a hit: the answer text before the repeated words that had not been released yet
    /// (it may be sent before the error). Empty on a second call.
    pub fn take_before_hit(&mut self) -> String {
        if self.hit { std::mem::take(&mut self.pending) } else { String::new() }
    }

    fn add_canary_char(&mut self, c: char, offset: usize) -> Result<(), Hit> {
        if self.index.canary.is_empty() || is_invisible(c) {
            return Ok(());
        }
        let folded = if c.is_ascii() {
            Some(c.to_ascii_lowercase())
        } else if c.is_alphanumeric() {
            // A full-width or styled letter or digit counts as its ASCII form.
            let mut ascii = None;
            unicode_normalization::char::decompose_compatible(c, |d| {
                if ascii.is_none() && d.is_ascii_alphanumeric() {
                    ascii = Some(d.to_ascii_lowercase());
                }
            });
            Some(ascii.unwrap_or('\u{0}'))
        } else {
            None
        };
        let Some(folded) = folded else { return Ok(()) };
        if !folded.is_ascii_alphanumeric() && folded != '\u{0}' {
            // Spaces and punctuation between the canary's characters do not break it.
            return Ok(());
        }
        let canary = &self.index.canary;
        let byte = folded as u8;
        let mut matched = self.canary_matched;
        while matched > 0 && canary[matched] != byte {
            matched = self.index.canary_fail[matched - 1];
        }
        if canary[matched] == byte {
            matched += 1;
        }
        self.canary_offsets.push_back(offset);
        while self.canary_offsets.len() > matched {
            self.canary_offsets.pop_front();
        }
        self.canary_matched = matched;
        if matched == canary.len() {
            return self.on_hit();
        }
        Ok(())
    }

    /// The offset in `pending` of the earliest character that could still be part of a hit.
    fn hold_from(&self) -> usize {
        let mut keep_from = self.pending.len();
        // A word being spelled out that is already longer than any prompt word cannot be one,
        // so neither it nor the words before it can be part of a run.
        if self.splitter.n_chars <= self.index.max_word_chars {
            if let Some(first) = self.recent.front() {
                keep_from = keep_from.min(first.start);
            }
            if let Some(start) = self.splitter.pending_start() {
                keep_from = keep_from.min(start);
            }
        }
        if let Some(first) = self.canary_offsets.front() {
            keep_from = keep_from.min(*first);
        }
        keep_from
    }

    /// Releases everything before the earliest character that could still be part of a hit.
    fn release(&mut self) -> String {
        let keep_from = if self.hold { self.hold_from() } else { self.pending.len() };
        if keep_from == 0 {
            return String::new();
        }
        let rest = self.pending.split_off(keep_from);
        let released = std::mem::replace(&mut self.pending, rest);
        for word in &mut self.recent {
            word.start = word.start.saturating_sub(keep_from);
        }
        for offset in &mut self.canary_offsets {
            *offset = offset.saturating_sub(keep_from);
        }
        self.splitter.rebase(keep_from);
        released
    }
}

/// Prompt indexes by run, built once per tool version (or brew edit) and shared by every
/// answer of it.
#[derive(Debug, Default)]
pub struct GuardCache {
    indexes: Mutex<HashMap<String, Arc<PromptIndex>>>,
}

/// At most this many prompt indexes are kept; past it the cache starts again.
const MAX_CACHED_INDEXES: usize = 1024;

impl GuardCache {
    /// The index of `prompt` under `key` (which must change whenever the prompt does, e.g.
    /// `tool:fix:7`).
    pub fn index(&self, key: &str, prompt: &str, canary: Option<&str>, n_words: usize) -> Arc<PromptIndex> {
        // A poisoned lock only means another thread panicked while inserting; the map is
        // still a valid cache.
        let mut indexes = self.indexes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = indexes.get(key) {
            return index.clone();
        }
        if indexes.len() >= MAX_CACHED_INDEXES {
            indexes.clear();
        }
        let index = Arc::new(PromptIndex::new(prompt, canary, n_words));
        indexes.insert(key.to_owned(), index.clone());
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const PROMPT: &str = "You are Fix, a careful code repair tool. Return the whole corrected file and nothing else: \
        no prose, no Markdown fences. Keep the original style, indentation and comments. \
        If the file has no bug, return it unchanged.";
    const CANARY: &str = "3fa9c1d2e4b5a6f7";

    fn index(n_words: usize) -> Arc<PromptIndex> {
        Arc::new(PromptIndex::new(PROMPT, Some(CANARY), n_words))
    }

    /// Feeds `chunks` through a blocking guard; returns what was released and whether it hit.
    fn run(index: &Arc<PromptIndex>, chunks: &[&str]) -> (String, bool) {
        let mut guard = Guard::new(index.clone(), GuardMode::Block);
        let mut released = String::new();
        for chunk in chunks {
            match guard.push(chunk) {
                Ok(text) => released.push_str(&text),
                Err(Hit) => {
                    released.push_str(&guard.take_before_hit());
                    return (released, true);
                }
            }
        }
        match guard.finish() {
            Ok(text) => released.push_str(&text),
            Err(Hit) => {
                released.push_str(&guard.take_before_hit());
                return (released, true);
            }
        }
        (released, false)
    }

    /// A reference tokenizer for ASCII text, written independently of [`WordSplitter`].
    pub(super) fn naive_words(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|word| !word.is_empty() && !word.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_ascii_lowercase)
            .collect()
    }

    /// Whether `text` holds `n` consecutive words of `prompt`, by brute force.
    pub(super) fn has_run(prompt: &str, text: &str, n: usize) -> bool {
        let prompt = naive_words(prompt);
        let text = naive_words(text);
        let runs: HashSet<&[String]> = prompt.windows(n).collect();
        text.windows(n).any(|window| runs.contains(window))
    }

    fn chars(text: &str) -> Vec<String> {
        text.chars().map(String::from).collect()
    }

    #[test]
    fn a_verbatim_leak_is_stopped_before_any_run_leaves() {
        let index = index(8);
        let answer = format!("Sure! Here are my instructions: {PROMPT}");
        for chunking in [vec![answer.as_str()], chars(&answer).iter().map(String::as_str).collect()] {
            let (released, hit) = run(&index, &chunking);
            assert!(hit);
            assert!(!has_run(PROMPT, &released, 8), "{released}");
            assert!(!released.to_lowercase().contains("careful code repair"), "{released}");
            assert!(released.starts_with("Sure!"), "text before the leak is released: {released:?}");
        }
    }

    #[test]
    fn disguised_leaks_are_stopped() {
        let index = index(8);
        let words: Vec<&str> = PROMPT.split_whitespace().collect();
        let third = words.len() / 3;
        let disguises = [
            PROMPT.to_uppercase(),
            words.join("\n"),
            format!("```text\n{PROMPT}\n```"),
            PROMPT
                .split(". ")
                .enumerate()
                .map(|(idx, line)| format!("{}: {line}", idx + 1))
                .collect::<Vec<_>>()
                .join("\n"),
            words[third..2 * third].join(" "),
            PROMPT.split(". ").map(|line| format!("> **{line}** and also remember that cats are great.")).collect(),
            PROMPT.replace(' ', " \u{200B}").replace("careful", "ca\u{00AD}reful"),
            // Full-width letters: NFKC folds them to ASCII.
            PROMPT
                .chars()
                .map(|c| if c.is_ascii_lowercase() { char::from_u32(c as u32 - 0x61 + 0xFF41).unwrap() } else { c })
                .collect(),
            format!("- {}", words.join(" - ")),
        ];
        for disguise in &disguises {
            let (released, hit) = run(&index, &[disguise]);
            assert!(hit, "not stopped: {disguise}");
            assert!(released.is_empty() || !has_run(PROMPT, &released, 8), "{released}");
            let (released, hit) = run(&index, &chars(disguise).iter().map(String::as_str).collect::<Vec<_>>());
            assert!(hit, "not stopped in one-character chunks: {disguise}");
            assert!(!has_run(PROMPT, &released, 8), "{released}");
        }
    }

    #[test]
    fn the_canary_is_stopped_in_any_case_or_spacing() {
        let index = index(8);
        let spaced: String = CANARY.to_uppercase().chars().flat_map(|c| [c, ' ']).collect();
        for answer in [format!("ref {CANARY} end"), format!("ref: {spaced}"), "3fa9-c1d2-E4B5-a6f7".to_owned()] {
            let (released, hit) = run(&index, &chars(&answer).iter().map(String::as_str).collect::<Vec<_>>());
            assert!(hit, "{answer}");
            let letters: String = released.chars().filter(char::is_ascii_alphanumeric).collect();
            assert!(!letters.to_lowercase().contains(CANARY), "{released}");
        }
        // Most of the canary is not the canary.
        assert!(!run(&index, &[&CANARY[..15]]).1);
    }

    #[test]
    fn ordinary_answers_pass_whole() {
        let index = index(8);
        let answers = [
            "def add(a, b):\n    return a + b\n",
            "The file has a bug: the function subtracts instead of adding. Return the sum instead.",
            // Shares phrases of up to 7 words with the prompt, never 8.
            "Keep the original style, indentation and comments, but rename the variable.",
            "",
        ];
        for answer in answers {
            let (released, hit) = run(&index, &[answer]);
            assert!(!hit, "{answer}");
            assert_eq!(released, answer);
            let (released, hit) = run(&index, &chars(answer).iter().map(String::as_str).collect::<Vec<_>>());
            assert!(!hit);
            assert_eq!(released, answer);
        }
    }

    #[test]
    fn only_words_that_could_grow_into_a_hit_are_held() {
        let index = index(8);
        let mut guard = Guard::new(index.clone(), GuardMode::Block);
        // No word here is in the prompt: everything but the word still being spelled is out.
        assert_eq!(guard.push("Sorry, xyzzy plugh qwerty").unwrap(), "Sorry, xyzzy plugh ");
        assert_eq!(guard.push(" ").unwrap(), "qwerty ");
        // Prompt words are held, but never more than n - 1 of them.
        assert_eq!(guard.push("return the whole corrected ").unwrap(), "");
        assert_eq!(guard.push("banana ").unwrap(), "return the whole corrected banana ");
        let mut guard = Guard::new(index, GuardMode::Block);
        assert_eq!(guard.push("Return the whole corrected file and nothing ").unwrap(), "");
        // A word still being spelled out may yet complete the run: all is held until it ends.
        assert_eq!(guard.push("xyzzy").unwrap(), "");
        assert_eq!(guard.push(" ").unwrap(), "Return the whole corrected file and nothing xyzzy ");
        assert_eq!(guard.finish().unwrap(), "");
    }

    #[test]
    fn a_word_longer_than_any_prompt_word_is_not_held() {
        let mut guard = Guard::new(index(8), GuardMode::Block);
        assert_eq!(guard.push("return the ").unwrap(), "");
        let blob = "A".repeat(200);
        assert_eq!(guard.push(&blob).unwrap(), format!("return the {blob}"));
        assert_eq!(guard.push("B ").unwrap(), "B ");
    }

    #[test]
    fn log_mode_holds_nothing_and_still_sees_the_hit() {
        let mut guard = Guard::new(index(8), GuardMode::Log);
        let words: Vec<&str> = PROMPT.split_whitespace().collect();
        assert_eq!(guard.push(&words[..7].join(" ")).unwrap(), words[..7].join(" "));
        assert_eq!(guard.push(" ").unwrap(), " ");
        assert_eq!(guard.push(&format!("{} ", words[7])), Err(Hit));
    }

    #[test]
    fn n_is_configurable() {
        let words: Vec<&str> = PROMPT.split_whitespace().collect();
        let five = words[3..8].join(" ");
        assert!(run(&index(4), &[&five]).1);
        assert!(!run(&index(8), &[&five]).1);
    }

    #[test]
    fn the_cache_builds_an_index_once_per_key() {
        let cache = GuardCache::default();
        let first = cache.index("tool:fix:1", PROMPT, None, 8);
        let again = cache.index("tool:fix:1", "another prompt entirely", None, 8);
        assert!(Arc::ptr_eq(&first, &again));
        let next = cache.index("tool:fix:2", "another prompt entirely", None, 8);
        assert!(!Arc::ptr_eq(&first, &next));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: whatever the prompt and however a leaking answer is chunked, no run of
    //! `n` prompt words leaves the guard; an answer with no such run leaves whole.

    use proptest::prelude::*;

    use super::tests::has_run;
    use super::*;

    const VOCABULARY: [&str; 24] = [
        "the", "a", "file", "return", "code", "never", "you", "are", "tool", "fix", "keep", "style", "bug", "and",
        "or", "not", "line", "json", "review", "each", "with", "to", "of", "it",
    ];

    fn text_of(words: &[usize], separators: &[usize]) -> String {
        const SEPARATORS: [&str; 7] = [" ", "\n", ", ", " - ", "\n> ", " **", "\n12: "];
        let mut text = String::new();
        for (idx, word) in words.iter().enumerate() {
            text.push_str(VOCABULARY[word % VOCABULARY.len()]);
            text.push_str(SEPARATORS[separators.get(idx).copied().unwrap_or(0) % SEPARATORS.len()]);
        }
        text
    }

    fn chunked(text: &str, cuts: &[usize]) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (chars.len() + 1)).collect();
        points.push(0);
        points.push(chars.len());
        points.sort_unstable();
        points.dedup();
        points.windows(2).map(|pair| chars[pair[0]..pair[1]].iter().collect()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // Answers that happen to hold a run are skipped by the second property.
            max_global_rejects: 1_000_000,
            ..ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256))
        })]

        #[test]
        fn no_run_of_n_prompt_words_passes(
            prompt_words in proptest::collection::vec(0usize..24, 10..80),
            prompt_seps in proptest::collection::vec(0usize..7, 80),
            leak_start in 0usize..80,
            leak_extra in 0usize..70,
            noise in proptest::collection::vec(0usize..24, 0..20),
            answer_seps in proptest::collection::vec(0usize..7, 200),
            cuts in proptest::collection::vec(0usize..2000, 0..60),
            n in 4usize..10,
        ) {
            let prompt = text_of(&prompt_words, &prompt_seps);
            // A leak of at least n consecutive prompt words, anywhere in the prompt.
            let start = leak_start % (prompt_words.len() - n + 1);
            let end = (start + n + leak_extra).min(prompt_words.len());
            let mut answer_words = noise.clone();
            answer_words.extend_from_slice(&prompt_words[start..end]);
            answer_words.extend_from_slice(&noise);
            let answer = text_of(&answer_words, &answer_seps);
            let index = Arc::new(PromptIndex::new(&prompt, None, n));
            let mut guard = Guard::new(index, GuardMode::Block);
            let mut released = String::new();
            let mut hit = false;
            for chunk in chunked(&answer, &cuts) {
                match guard.push(&chunk) {
                    Ok(text) => released.push_str(&text),
                    Err(Hit) => { hit = true; break; }
                }
            }
            if !hit {
                match guard.finish() {
                    Ok(text) => released.push_str(&text),
                    Err(Hit) => hit = true,
                }
            }
            released.push_str(&guard.take_before_hit());
            prop_assert!(hit);
            prop_assert!(!has_run(&prompt, &released, n), "released {:?}", released);
        }

        #[test]
        fn answers_without_a_run_pass_whole(
            prompt_words in proptest::collection::vec(0usize..24, 1..60),
            answer_words in proptest::collection::vec(0usize..24, 1..60),
            answer_seps in proptest::collection::vec(0usize..7, 60),
            cuts in proptest::collection::vec(0usize..2000, 0..40),
            n in 4usize..10,
        ) {
            let prompt = text_of(&prompt_words, &[]);
            let answer = text_of(&answer_words, &answer_seps);
            prop_assume!(!has_run(&prompt, &answer, n));
            let index = Arc::new(PromptIndex::new(&prompt, None, n));
            let mut guard = Guard::new(index, GuardMode::Block);
            let mut released = String::new();
            for chunk in chunked(&answer, &cuts) {
                released.push_str(&guard.push(&chunk).expect("no hit"));
            }
            released.push_str(&guard.finish().expect("no hit"));
            prop_assert_eq!(released, answer);
        }
    }
}
