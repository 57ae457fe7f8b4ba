//! Token counts from a model server's answer as it streams past, without holding
//! the answer: the `usage` object of a JSON completion, or of the SSE event that
//! carries it (the finish chunk in older llama.cpp builds, an extra `"choices":[]`
//! chunk in newer ones).

use serde::Deserialize;

/// Longest SSE line kept while looking for `usage` (events are far smaller).
const MAX_LINE: usize = 1 << 20;
/// Largest JSON answer kept to read its `usage` at the end (an answer of a
/// quarter-million tokens; anything longer is passed on uncounted).
const MAX_JSON: usize = 1 << 20;

/// Prompt and completion tokens of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Usage>,
}

#[derive(Debug)]
enum Mode {
    Events { line: Vec<u8>, overlong: bool },
    Document { bytes: Vec<u8>, overlong: bool },
}

/// Watches an answer's bytes go by and keeps only its token counts.
#[derive(Debug)]
pub struct UsageScanner {
    mode: Mode,
    usage: Option<Usage>,
}

impl UsageScanner {
    /// A scanner for server-sent events (`events`) or one JSON document.
    pub fn new(events: bool) -> Self {
        let mode = if events {
            Mode::Events {
                line: Vec::new(),
                overlong: false,
            }
        } else {
            Mode::Document {
                bytes: Vec::new(),
                overlong: false,
            }
        };
        UsageScanner { mode, usage: None }
    }

    /// Looks at the next piece of the answer.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        match &mut self.mode {
            Mode::Document {
                bytes: kept,
                overlong,
            } => {
                if kept.len() + bytes.len() > MAX_JSON {
                    *overlong = true;
                    kept.clear();
                } else if !*overlong {
                    kept.extend_from_slice(bytes);
                }
            }
            Mode::Events { line, overlong } => {
                while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
                    if !*overlong {
                        line.extend_from_slice(&bytes[..end]);
                        if let Some(usage) = event_usage(line) {
                            self.usage = Some(usage);
                        }
                    }
                    line.clear();
                    *overlong = false;
                    bytes = &bytes[end + 1..];
                }
                if line.len() + bytes.len() > MAX_LINE {
                    *overlong = true;
                    line.clear();
                } else if !*overlong {
                    line.extend_from_slice(bytes);
                }
            }
        }
    }

    /// The counts, once the answer is complete.
    pub fn finish(self) -> Option<Usage> {
        match self.mode {
            Mode::Document {
                bytes,
                overlong: false,
            } => serde_json::from_slice::<WithUsage>(&bytes)
                .ok()
                .and_then(|d| d.usage),
            Mode::Document { .. } => None,
            Mode::Events { .. } => self.usage,
        }
    }
}

fn event_usage(line: &[u8]) -> Option<Usage> {
    let data = line.strip_prefix(b"data:")?;
    // Cheap test first: most events are content deltas.
    if !data.windows(7).any(|w| w == b"\"usage\"") {
        return None;
    }
    serde_json::from_slice::<WithUsage>(data.trim_ascii())
        .ok()?
        .usage
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NEWER: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":3,\"total_tokens\":17}}\n\n\
        data: [DONE]\n\n";
    const OLDER: &str = ":\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\r\n\r\n\
        data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n\
        data: [DONE]\n\n";

    fn scan(events: bool, pieces: &[&[u8]]) -> Option<Usage> {
        let mut scanner = UsageScanner::new(events);
        for piece in pieces {
            scanner.feed(piece);
        }
        scanner.finish()
    }

    #[test]
    fn reads_both_streaming_shapes_and_documents() {
        assert_eq!(
            scan(true, &[NEWER.as_bytes()]),
            Some(Usage {
                prompt_tokens: 14,
                completion_tokens: 3
            })
        );
        assert_eq!(
            scan(true, &[OLDER.as_bytes()]),
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2
            })
        );
        let doc = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        assert_eq!(
            scan(false, &[&doc[..10], &doc[10..]]),
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 7
            })
        );
        assert_eq!(
            scan(true, &[b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"]),
            None
        );
        assert_eq!(scan(false, &[b"not json"]), None);
    }

    #[test]
    fn a_prompt_that_mentions_usage_is_not_mistaken_for_it() {
        let sneaky = "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\": 99\"}}]}\n\n";
        assert_eq!(scan(true, &[sneaky.as_bytes()]), None);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_counts(cut in proptest::collection::vec(0usize..400, 0..8)) {
            let bytes = NEWER.as_bytes();
            let mut cuts: Vec<usize> = cut.into_iter().map(|c| c % bytes.len()).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts {
                pieces.push(&bytes[at..c.max(at)]);
                at = c.max(at);
            }
            pieces.push(&bytes[at..]);
            prop_assert_eq!(scan(true, &pieces), Some(Usage { prompt_tokens: 14, completion_tokens: 3 }));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), events in any::<bool>()) {
            let _ = scan(events, &[&bytes]);
        }
    }
}
