//! Step and stop detection on a sequence's decoded text, fed one token's text
//! delta at a time.
//!
//! A [`TextWatcher`] answers, for each token, three questions: did this token
//! end a reasoning step (the step delimiter, default `"\n\n"`)? did it enter
//! the answer phase (the answer marker, e.g. `"</think>"`)? did a stop string
//! match? It also says which text can be streamed to the client now, holding
//! back only what could still turn out to be the start of a stop string.
//!
//! Patterns are found in the text, not in token ids, so a pattern split over
//! several tokens (`"\n"` + `"\n"`) or sharing a token with other characters
//! (`".\n\nThe"`) is found all the same. The watcher keeps only a bounded
//! tail of the text (shorter than the longest pattern), never the history.
//!
//! # Where a step ends
//! A step ends with the token in which the delimiter's last byte arrives.
//! If that token carries more text after the delimiter (`".\n\nThe"`), that
//! text stays in the step that just ended, and the next token starts the new
//! step. (Tokenizers rarely merge a paragraph break with the next word, so
//! this is an edge case; the rule keeps token and step boundaries aligned.)
//! Occurrences are counted like `str::split` counts them: left to right,
//! without overlap (`"\n\n\n"` holds one delimiter, `"\n\n\n\n"` two). A
//! token holding several delimiters still ends only one step.
//!
//! # Stop strings
//! As in OpenAI's API, the output is cut just before the stop string and the
//! stop string is not emitted. The stop string that wins is the first one to
//! be completed in the text (the one ending earliest; on a tie the one
//! starting earliest, then the first listed), so the result does not depend
//! on how the text was split into tokens. Events are only reported for text
//! up to the end of that stop string, and nothing after it.

use crate::{RoutingParams, SamplingParams};

/// What the token just pushed did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextEvents {
    /// Text that can be streamed to the client now (possibly text held back
    /// from earlier tokens, possibly empty while a stop string may be forming).
    pub emit: String,
    /// The token completed a step (see the module docs for the rule).
    pub step_end: bool,
    /// The answer marker appeared: the answer phase starts; no more steps.
    pub answer_started: bool,
    /// A stop string matched: its index in the request's list. The sequence
    /// is finished; `emit` ends right before the stop string.
    pub stop: Option<usize>,
}

/// Finds the occurrences of one pattern in text that arrives in pieces.
#[derive(Debug, Clone)]
struct Scanner {
    pattern: String,
    /// Text after the end of the last occurrence that could still begin one:
    /// at most `pattern.len() - 1` bytes.
    pending: String,
}

impl Scanner {
    fn new(pattern: &str) -> Option<Self> {
        (!pattern.is_empty()).then(|| Self {
            pattern: pattern.to_string(),
            pending: String::new(),
        })
    }

    /// Feeds the next piece of text, which starts at byte `offset` of the
    /// whole text. Returns the end offset (in the whole text) of the first
    /// new occurrence, if any; later ones in the same piece are consumed.
    fn feed(&mut self, piece: &str, offset: usize) -> Option<usize> {
        let mut text = std::mem::take(&mut self.pending);
        let base = offset - text.len();
        text.push_str(piece);
        let mut first = None;
        let mut last_end = 0;
        for (start, m) in text.match_indices(self.pattern.as_str()) {
            last_end = start + m.len();
            first.get_or_insert(base + last_end);
        }
        let mut keep_from = last_end.max(text.len().saturating_sub(self.pattern.len() - 1));
        while !text.is_char_boundary(keep_from) {
            keep_from += 1;
        }
        text.drain(..keep_from);
        self.pending = text;
        first
    }
}

/// Watches one sequence's output text for step ends, the answer marker and
/// stop strings. Create one per sequence; push every token's text delta.
#[derive(Debug, Clone)]
pub struct TextWatcher {
    /// `None` when there is no delimiter or once the answer phase began.
    delimiter: Option<Scanner>,
    /// `None` when there is no marker or once it was seen.
    marker: Option<Scanner>,
    /// One per stop string, `None` for an empty one (which never matches).
    stops: Vec<Option<Scanner>>,
    /// Text not streamed yet: the longest tail that is a proper prefix of a
    /// stop string (shorter than the longest stop string).
    held: String,
    /// Bytes pushed so far.
    total: usize,
    steps: usize,
    in_answer: bool,
    stopped: bool,
    /// Stop strings may end the sequence (off before `min_tokens`); they are
    /// scanned either way, so one completed after it turns on is found.
    stops_active: bool,
}

impl TextWatcher {
    /// `delimiter` ends steps ("" = no steps); `answer_marker` starts the
    /// answer phase; `stop` are the request's stop strings (empty ones ignored).
    pub fn new(delimiter: &str, answer_marker: Option<&str>, stop: &[String]) -> Self {
        Self {
            delimiter: Scanner::new(delimiter),
            marker: answer_marker.and_then(Scanner::new),
            stops: stop.iter().map(|s| Scanner::new(s)).collect(),
            held: String::new(),
            total: 0,
            steps: 0,
            in_answer: false,
            stopped: false,
            stops_active: true,
        }
    }

    /// Whether a stop string completed by the next pushes ends the sequence
    /// (vLLM checks none before `min_tokens` output tokens). Text that may
    /// begin a stop string is held back either way.
    pub fn set_stops_active(&mut self, active: bool) {
        self.stops_active = active;
    }

    /// The watcher a request's parameters ask for.
    pub fn from_params(routing: &RoutingParams, sampling: &SamplingParams) -> Self {
        Self::new(
            &routing.delimiter,
            routing.answer_marker.as_deref(),
            &sampling.stop,
        )
    }

    /// Steps completed so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Whether the answer marker has been seen.
    pub fn in_answer(&self) -> bool {
        self.in_answer
    }

    /// Whether a stop string matched (later pushes report nothing).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the text of the token just generated.
    pub fn push(&mut self, token_text: &str) -> TextEvents {
        if self.stopped {
            return TextEvents::default();
        }
        let offset = self.total;
        self.total += token_text.len();

        // The stop string completed first bounds everything else.
        let mut stop_hit: Option<(usize, usize, usize)> = None; // (end, start, index)
        for (index, scanner) in self.stops.iter_mut().enumerate() {
            if let Some(scanner) = scanner {
                if let Some(end) = scanner.feed(token_text, offset) {
                    let hit = (end, end - scanner.pattern.len(), index);
                    if stop_hit.is_none_or(|best| hit < best) {
                        stop_hit = Some(hit);
                    }
                }
            }
        }
        if !self.stops_active {
            stop_hit = None;
        }
        let limit = stop_hit.map_or(usize::MAX, |(end, _, _)| end);

        let mut events = TextEvents::default();
        let mut step_limit = limit;
        if let Some(marker) = &mut self.marker {
            if let Some(end) = marker.feed(token_text, offset).filter(|&end| end <= limit) {
                events.answer_started = true;
                step_limit = end;
            }
        }
        if let Some(delimiter) = &mut self.delimiter {
            events.step_end = delimiter
                .feed(token_text, offset)
                .is_some_and(|end| end <= step_limit);
        }
        if events.step_end {
            self.steps += 1;
        }
        if events.answer_started {
            self.in_answer = true;
            self.marker = None;
            self.delimiter = None;
        }

        self.held.push_str(token_text);
        match stop_hit {
            Some((_, start, index)) => {
                let held_start = self.total - self.held.len();
                let cut = start.saturating_sub(held_start);
                events.emit = self.held.get(..cut).unwrap_or_default().to_string();
                events.stop = Some(index);
                self.held.clear();
                self.stopped = true;
            }
            None => {
                let keep = self.stop_prefix_len();
                let tail = self.held.split_off(self.held.len() - keep);
                events.emit = std::mem::replace(&mut self.held, tail);
            }
        }
        events
    }

    /// The text still held back, for when the sequence ends for another
    /// reason (EOS, length): it is final output now.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest tail of `held` that some stop string starts with.
    fn stop_prefix_len(&self) -> usize {
        let longest = self
            .stops
            .iter()
            .flatten()
            .map(|s| s.pattern.len())
            .max()
            .unwrap_or(0);
        let mut from = self.held.len().saturating_sub(longest.saturating_sub(1));
        while from < self.held.len() {
            if self.held.is_char_boundary(from) {
                let tail = &self.held[from..];
                if self
                    .stops
                    .iter()
                    .flatten()
                    .any(|s| s.pattern.starts_with(tail))
                {
                    return self.held.len() - from;
                }
            }
            from += 1;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn watcher(stop: &[&str]) -> TextWatcher {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        TextWatcher::new("\n\n", Some("</think>"), &stop)
    }

    /// Pushes each token and returns the per-token events.
    fn run(w: &mut TextWatcher, tokens: &[&str]) -> Vec<TextEvents> {
        tokens.iter().map(|t| w.push(t)).collect()
    }

    fn step_ends(events: &[TextEvents]) -> Vec<bool> {
        events.iter().map(|e| e.step_end).collect()
    }

    #[test]
    fn delimiter_as_its_own_token_inside_a_token_or_split() {
        let mut w = watcher(&[]);
        let ev = run(
            &mut w,
            &[
                "First", ".", "\n\n", "Then", ".\n\nThe", " end", "\n", "\n", "x",
            ],
        );
        assert_eq!(
            step_ends(&ev),
            [false, false, true, false, true, false, false, true, false]
        );
        assert_eq!(w.steps(), 3);
        // Without stop strings everything streams at once.
        let text: String = ev.iter().map(|e| e.emit.as_str()).collect();
        assert_eq!(text, "First.\n\nThen.\n\nThe end\n\nx");
    }

    #[test]
    fn delimiters_do_not_overlap() {
        let mut w = watcher(&[]);
        // "\n\n\n": one delimiter (then a lone "\n"); a fourth "\n" makes the second.
        assert_eq!(
            step_ends(&run(&mut w, &["a\n\n", "\n", "\n"])),
            [true, false, true]
        );
        // A token holding two delimiters ends one step.
        let mut w = watcher(&[]);
        assert_eq!(step_ends(&run(&mut w, &["a\n\nb\n\n", "c"])), [true, false]);
        assert_eq!(w.steps(), 1);
    }

    #[test]
    fn answer_marker_ends_step_detection() {
        let mut w = watcher(&[]);
        let ev = run(
            &mut w,
            &["step\n\n", "</", "think", ">", "\n\n", "Answer\n\n"],
        );
        assert_eq!(step_ends(&ev), [true, false, false, false, false, false]);
        assert_eq!(
            ev.iter().map(|e| e.answer_started).collect::<Vec<_>>(),
            [false, false, false, true, false, false]
        );
        assert!(w.in_answer());
        // A delimiter before the marker in the same token still ends a step;
        // one after it does not.
        let mut w = watcher(&[]);
        let ev = w.push("x\n\n</think>");
        assert!(ev.step_end && ev.answer_started);
        let mut w = watcher(&[]);
        let ev = w.push("x</think>\n\n");
        assert!(!ev.step_end && ev.answer_started);
    }

    #[test]
    fn inactive_stops_are_still_scanned_and_end_the_text_once_active() {
        let mut w = TextWatcher::new("", None, &["END".to_string()]);
        w.set_stops_active(false);
        let ev = w.push("a END b E");
        assert_eq!((ev.stop, ev.emit.as_str()), (None, "a END b "));
        w.set_stops_active(true);
        // Completed after activation, begun before: it counts.
        let ev = w.push("ND c");
        assert_eq!((ev.stop, ev.emit.as_str()), (Some(0), ""));
    }

    #[test]
    fn stop_string_truncates_and_ends_the_stream() {
        let mut w = watcher(&["END"]);
        let ev = run(&mut w, &["ab", "E", "N", "x", "yE", "ND tail", "more"]);
        let emits: Vec<&str> = ev.iter().map(|e| e.emit.as_str()).collect();
        // "E", "EN" are held back until they cannot start "END" any more.
        assert_eq!(emits, ["ab", "", "", "ENx", "y", "", ""]);
        assert_eq!(
            ev.iter().map(|e| e.stop).collect::<Vec<_>>(),
            [None, None, None, None, None, Some(0), None]
        );
        assert!(w.is_stopped());
        assert_eq!(w.finish(), "");
    }

    #[test]
    fn stop_string_inside_one_token_and_first_completed_wins() {
        let mut w = watcher(&["abcd", "bc"]);
        let ev = w.push("xxabcdyy");
        assert_eq!((ev.emit.as_str(), ev.stop), ("xxa", Some(1)));
        // Same end: the one starting first (the longer one).
        let mut w = watcher(&["c", "abc"]);
        let ev = w.push("zabc");
        assert_eq!((ev.emit.as_str(), ev.stop), ("z", Some(1)));
        // Nothing after the stop string counts, not even a step end.
        let mut w = watcher(&["STOP"]);
        let ev = w.push("aSTOP\n\nb");
        assert_eq!(
            (ev.emit.as_str(), ev.step_end, ev.stop),
            ("a", false, Some(0))
        );
        assert_eq!(w.push("more\n\n"), TextEvents::default());
    }

    #[test]
    fn held_text_is_released_by_finish_and_empty_patterns_are_ignored() {
        let mut w = watcher(&["", "</stop>"]);
        assert_eq!(w.push("done </st").emit, "done ");
        assert_eq!(w.finish(), "</st");
        let mut w = TextWatcher::new("", None, &[]);
        let ev = w.push("a\n\nb</think>");
        assert_eq!(
            (ev.step_end, ev.answer_started, ev.emit.as_str()),
            (false, false, "a\n\nb</think>")
        );
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let mut w = TextWatcher::new("。\n", None, &["終わり".to_string()]);
        let ev = run(&mut w, &["日本", "語。", "\n次", "終", "わ", "り!"]);
        assert_eq!(step_ends(&ev), [false, false, true, false, false, false]);
        let text: String = ev.iter().map(|e| e.emit.as_str()).collect();
        assert_eq!(text, "日本語。\n次");
        assert_eq!(ev[5].stop, Some(0));
    }

    #[test]
    fn from_params_uses_the_request_settings() {
        let routing = RoutingParams {
            delimiter: "|".into(),
            answer_marker: Some("#".into()),
            ..RoutingParams::default()
        };
        let sampling = SamplingParams {
            stop: vec!["!".into()],
            ..SamplingParams::default()
        };
        let mut w = TextWatcher::from_params(&routing, &sampling);
        let ev = run(&mut w, &["a|", "#", "b!"]);
        assert!(ev[0].step_end && ev[1].answer_started && ev[2].stop == Some(0));
    }

    /// Everything the watcher should report, computed on the whole text.
    struct Expected {
        step_ends: Vec<usize>,
        marker_end: Option<usize>,
        /// (end, start, index) of the stop string completed first.
        stop: Option<(usize, usize, usize)>,
    }

    fn expected(text: &str, delimiter: &str, marker: &str, stops: &[String]) -> Expected {
        let stop = stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| {
                text.find(s.as_str())
                    .map(|start| (start + s.len(), start, i))
            })
            .min();
        let limit = stop.map_or(text.len(), |(end, _, _)| end);
        let marker_end = text
            .find(marker)
            .map(|s| s + marker.len())
            .filter(|&e| e <= limit);
        let step_limit = marker_end.unwrap_or(limit);
        let step_ends = text
            .match_indices(delimiter)
            .map(|(s, m)| s + m.len())
            .filter(|&e| e <= step_limit)
            .collect();
        Expected {
            step_ends,
            marker_end,
            stop,
        }
    }

    /// Text built from pieces that make the patterns likely, including multibyte ones.
    fn text_strategy() -> impl Strategy<Value = String> {
        let pieces = [
            "a", "b", "\n", "\n\n", ".", "é", "日", "</", "think", ">", "S", "TOP", "é\n", " ",
        ];
        prop::collection::vec(prop::sample::select(pieces.to_vec()), 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn events_do_not_depend_on_how_the_text_is_split(
            text in text_strategy(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
            stops in prop::sample::subsequence(vec!["STOP".to_string(), "é\né".to_string(), "b.".to_string()], 0..=3),
        ) {
            let delimiter = "\n\n";
            let marker = "</think>";
            // Split points on char boundaries.
            let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
            let mut points: Vec<usize> = cuts.iter().map(|c| boundaries[c.index(boundaries.len())]).collect();
            points.push(0);
            points.push(text.len());
            points.sort_unstable();
            points.dedup();

            let exp = expected(&text, delimiter, marker, &stops);
            let mut w = TextWatcher::new(delimiter, Some(marker), &stops);
            let mut emitted = String::new();
            let mut step_count = 0;
            for pair in points.windows(2) {
                let (s, e) = (pair[0], pair[1]);
                let ev = w.push(&text[s..e]);
                let within = |x: usize| s < x && x <= e;
                prop_assert_eq!(ev.step_end, exp.step_ends.iter().any(|&x| within(x)), "token {:?}", &text[s..e]);
                prop_assert_eq!(ev.answer_started, exp.marker_end.is_some_and(within));
                prop_assert_eq!(ev.stop, exp.stop.filter(|&(end, _, _)| within(end)).map(|(_, _, i)| i));
                step_count += usize::from(ev.step_end);
                emitted.push_str(&ev.emit);
                // Held-back text is bounded by the longest stop string.
                let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
                prop_assert!(w.held.len() < longest.max(1));
            }
            emitted.push_str(&w.finish());
            let want = exp.stop.map_or(text.as_str(), |(_, start, _)| &text[..start]);
            prop_assert_eq!(emitted, want);
            prop_assert_eq!(w.steps(), step_count);
        }
    }
}
