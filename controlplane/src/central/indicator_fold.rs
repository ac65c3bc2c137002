//! The state journal's indicator changes folded onto the state file's
//! indicators as the files hold them (value, audit ID and feed strings):
//! nothing parsed, compiled or rendered back.
//!
//! The client's persist thread folds the journal into a new state file
//! when the journal has outgrown it. Through the gateway's model
//! ([`SyncedState`](super::protocol::SyncedState): every value parsed into
//! an indicator kind and every audit ID put in a hash map, then all of it
//! rendered and sorted again) a fold of 2,000,000 indicators and as many
//! journaled took 4.1-4.4 s of CPU on the control plane's core (7-12 s at
//! catch-up priority), every ~40 batches of 100,000. Here the journal's
//! last word on each audit ID it touched is kept in one map, and the state
//! file's indicators pass through once, each looked up there: 3.2-3.5 s
//! (5.5-6.4 s); what is left is mostly reading and writing the JSON.
//!
//! Why the strings can be trusted as they are: every journal record is an
//! answer the gateway validated whole and applied before appending it, and
//! carries a SHA-256; the state file was validated when it was applied or
//! loaded; and a start validates the folded file whole before enforcing it.
//! Everything but the indicators (policy, settings, certificates) is still
//! replayed through the model, which is cheap.
//!
//! It owns only the merge; it must never read or write a file, nor change
//! anything but Central's indicators.

use super::protocol::{Change, IndicatorLines, SyncAnswer, WireIndicator};
use rustc_hash::FxHashMap;

/// The indicator changes of a run of journal records, in order.
#[derive(Debug, Default)]
pub struct IndicatorFold {
    /// Each change with the revision it made. Kept whole until
    /// [`IndicatorFold::apply`], which borrows its strings: a map owning
    /// copies of them paid an allocation and a free per indicator, and
    /// more for each one replaced (2.1 s for 4M adds of 1M audit IDs,
    /// against 0.3 s borrowed).
    taken: Vec<(u64, Change)>,
}

impl IndicatorFold {
    /// Takes the indicator changes out of `answer` (the next record's, in
    /// order), each replaced by an empty removal, so that what is left,
    /// with its revisions whole, can be replayed through the model.
    pub fn take_from(&mut self, answer: &mut SyncAnswer) {
        for entry in answer.changes.iter_mut().flatten() {
            if matches!(
                entry.change,
                Change::IndicatorsAdd { .. } | Change::IndicatorsAddLines { .. } | Change::IndicatorsRemove { .. }
            ) {
                let change = std::mem::replace(&mut entry.change, Change::IndicatorsRemove { audit_ids: Vec::new() });
                self.taken.push((entry.revision, change));
            }
        }
    }

    /// `base` (the state file's indicators) with the changes applied,
    /// sorted by audit ID; `Ok(None)` when `stop` said so first (checked
    /// between changes and every 65,536 indicators).
    pub fn apply(
        self,
        base: Vec<WireIndicator>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<WireIndicator>>, String> {
        // The last change to each audit ID: the value and feed it was
        // added with, or `None`: removed.
        let mut last: FxHashMap<&str, Option<(&str, &str)>> = FxHashMap::default();
        for (revision, change) in &self.taken {
            if stop() {
                return Ok(None);
            }
            match change {
                Change::IndicatorsAdd { indicators } => {
                    for i in indicators {
                        last.insert(&i.audit_id, Some((&i.value, &i.feed)));
                    }
                }
                Change::IndicatorsAddLines { lines } => {
                    for line in IndicatorLines::split(lines) {
                        let (value, audit_id, feed) = line.map_err(|e| format!("revision {revision}: {e}"))?;
                        last.insert(audit_id, Some((value, feed)));
                    }
                }
                Change::IndicatorsRemove { audit_ids } => {
                    for a in audit_ids {
                        last.insert(a, None);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(base.len() + last.len());
        for (n, i) in base.into_iter().enumerate() {
            if n % 65_536 == 0 && stop() {
                return Ok(None);
            }
            match last.remove(i.audit_id.as_str()) {
                None => out.push(i),
                Some(None) => {}
                Some(Some((value, feed))) => {
                    out.push(WireIndicator { value: value.to_owned(), audit_id: i.audit_id, feed: feed.to_owned() })
                }
            }
        }
        // What is left was not in the base: new audit IDs.
        out.extend(last.into_iter().filter_map(|(audit_id, v)| {
            v.map(|(value, feed)| WireIndicator {
                value: value.to_owned(),
                audit_id: audit_id.to_owned(),
                feed: feed.to_owned(),
            })
        }));
        if stop() {
            return Ok(None);
        }
        // A state file written by a fold or from the model is sorted
        // already: the stable sort finds that run, sorts the new ones and
        // merges the two, linear in the base.
        out.sort_by(|a, b| a.audit_id.cmp(&b.audit_id));
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::central::protocol::JournalEntry;

    fn w(v: &str, a: &str) -> WireIndicator {
        WireIndicator { value: v.into(), audit_id: a.into(), feed: "mdr".into() }
    }

    fn answer(revision: u64, change: Change) -> SyncAnswer {
        SyncAnswer { revision, changes: Some(vec![JournalEntry { revision, change }]), snapshot: None }
    }

    #[test]
    fn later_changes_win_and_the_rest_is_left_to_replay() {
        let mut f = IndicatorFold::default();
        let mut a1 =
            answer(5, Change::IndicatorsAdd { indicators: vec![w("198.51.100.1", "N1"), w("x.example", "B2")] });
        f.take_from(&mut a1);
        assert_eq!(a1.changes.as_ref().unwrap()[0].change, Change::IndicatorsRemove { audit_ids: vec![] });
        let mut lines = IndicatorLines::with_capacity(2);
        lines.push("y.example", "B3", "other");
        lines.push("198.51.100.2", "N1", "mdr");
        let mut a2 = answer(6, Change::IndicatorsAddLines { lines: lines.0 });
        f.take_from(&mut a2);
        let mut a3 = answer(7, Change::IndicatorsRemove { audit_ids: vec!["B1".into(), "gone".into()] });
        f.take_from(&mut a3);
        let mut policy = answer(8, Change::PolicySet { policy: "p".into() });
        f.take_from(&mut policy);
        assert_eq!(
            policy.changes.unwrap()[0].change,
            Change::PolicySet { policy: "p".into() },
            "not an indicator change"
        );

        let base = vec![w("10.0.0.1", "B1"), w("10.0.0.2", "B2"), w("10.0.0.3", "B3"), w("10.0.0.4", "B4")];
        let got = f.apply(base, &|| false).unwrap().unwrap();
        let mut want = vec![w("x.example", "B2"), w("y.example", "B3"), w("10.0.0.4", "B4"), w("198.51.100.2", "N1")];
        want[1].feed = "other".into();
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_that_does_not_split_is_refused() {
        let mut a = answer(3, Change::IndicatorsAddLines { lines: "only-a-value\n".into() });
        let mut f = IndicatorFold::default();
        f.take_from(&mut a);
        let e = f.apply(Vec::new(), &|| false).unwrap_err();
        assert!(e.contains("revision 3") && e.contains("is not VALUE<tab>AUDIT_ID<tab>FEED"), "{e}");
    }

    #[test]
    fn an_unsorted_base_comes_out_sorted_and_stop_is_heard() {
        let f = IndicatorFold::default();
        let got = f.apply(vec![w("10.0.0.2", "Z"), w("10.0.0.1", "A")], &|| false).unwrap().unwrap();
        assert_eq!(got, vec![w("10.0.0.1", "A"), w("10.0.0.2", "Z")]);
        assert_eq!(IndicatorFold::default().apply(vec![w("10.0.0.1", "A")], &|| true), Ok(None));
    }
}
